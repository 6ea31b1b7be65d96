"""DecideST: plan + approval + applied diff -> BuildOutput (the argv that verifies it)."""

from __future__ import annotations

from typing import Any

from services.worker.git_ops import git
from services.worker.steps.base import ArtifactOut, StepContext, StepOutcome, plan_block
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId
from shared.opencode.wrapper import CallFailed, StructuredCall


def decide_prompt(
    goal: str, plan_text: str, diffstat: str, allowlist: tuple[str, ...], attempt: int
) -> str:
    return "\n".join(
        [
            "The approved plan below has been applied.",
            "Choose ONE command that verifies the change.",
            "Answer via the schema: next_action 'verify', argv (a program and its arguments, no",
            f"shell), reason. Allowed programs: {', '.join(allowlist)}.",
            "",
            f"Intent: {goal}",
            plan_text,
            "--- applied diffstat ---",
            diffstat.strip(),
            "",
            f"kodo-attempt: {attempt}",
        ]
    )


def decide_step(ctx: StepContext) -> StepOutcome:
    if ctx.plan is None or ctx.approved_at is None or ctx.worktree_path is None:
        return StepOutcome.failed("decide needs an approved plan and a worktree", {})
    settings = ctx.rt.settings
    diffstat = git(ctx.worktree_path, "diff", "--stat", "HEAD~1", "HEAD")
    attempts: list[dict[str, Any]] = []
    for attempt in range(1, settings.schema_retries + 1):
        call = StructuredCall(
            run_id=ctx.run_id,
            step_id=StepId.DECIDE.value,
            attempt=attempt,
            agent="plan",
            prompt=decide_prompt(
                ctx.goal, plan_block(ctx.plan), diffstat, settings.exec_allowlist, attempt
            ),
            schema=BUILD_OUTPUT_SCHEMA,
            directory=str(ctx.worktree_path),
        )
        try:
            result = ctx.rt.oc.prompt_structured(call)
        except CallFailed as exc:
            attempts.append(
                {"attempt": attempt, "op_key": exc.op_key, "status": exc.status, "error": exc.error}
            )
            continue
        decision = result.answer
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
            output={
                "argv": decision["argv"],
                "next_action": decision["next_action"],
                "attempts": attempts,
            },
            artifacts=[ArtifactOut.json("decision", "decision.json", decision)],
        )
    return StepOutcome.failed(
        f"no valid decision after {settings.schema_retries} attempts",
        {"step": StepId.DECIDE.value, "attempts": attempts},
    )
