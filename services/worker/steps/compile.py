"""CompileST: intent -> plan agent -> a validated PlanOutput (the plan card)."""

from __future__ import annotations

from typing import Any

from services.worker.git_ops import ensure_worktree
from services.worker.steps.base import ArtifactOut, StepContext, StepOutcome
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId
from shared.hashing import canonical_json, sha256_hex
from shared.opencode.wrapper import CallFailed, StructuredCall


def compile_prompt(goal: str, attempt: int, rejected: list[str]) -> str:
    lines = [
        "You are planning a code change. Do not modify any file.",
        "Read the repository in the working directory and answer with the plan via the schema:",
        "design (how), files (each path with change add|modify|delete and why), risks, tests.",
        "",
        f"Intent: {goal}",
        "",
        f"kodo-attempt: {attempt}",
    ]
    if rejected:
        lines += ["", "Your previous answers were rejected:", *(f"- {r}" for r in rejected)]
    return "\n".join(lines)


def compile_step(ctx: StepContext) -> StepOutcome:
    settings = ctx.rt.settings
    worktree = ensure_worktree(ctx.repo_path, settings.workspace_dir, ctx.run_id, ctx.base_ref)
    attempts: list[dict[str, Any]] = []
    rejected: list[str] = []
    for attempt in range(1, settings.schema_retries + 1):
        call = StructuredCall(
            run_id=ctx.run_id,
            step_id=StepId.COMPILE.value,
            attempt=attempt,
            agent="plan",
            prompt=compile_prompt(ctx.goal, attempt, rejected),
            schema=PLAN_OUTPUT_SCHEMA,
            directory=str(worktree.path),
        )
        try:
            result = ctx.rt.oc.prompt_structured(call)
        except CallFailed as exc:
            attempts.append(
                {"attempt": attempt, "op_key": exc.op_key, "status": exc.status, "error": exc.error}
            )
            rejected.append(exc.error)
            continue
        plan = result.answer
        plan_sha = sha256_hex(canonical_json(plan))
        attempts.append(
            {
                "attempt": attempt,
                "op_key": result.op_key,
                "status": "succeeded",
                "cache": result.cache,
            }
        )
        return StepOutcome(
            ok=True,
            output={"plan_sha256": plan_sha, "attempts": attempts, "branch": worktree.branch},
            artifacts=[ArtifactOut.json("plan_card", "plan.json", plan)],
            plan_sha256=plan_sha,
            workspace=(worktree.branch, str(worktree.path)),
        )
    return StepOutcome.failed(
        f"no valid plan after {settings.schema_retries} attempts",
        {"step": StepId.COMPILE.value, "schema": PLAN_OUTPUT_SCHEMA, "attempts": attempts},
    )
