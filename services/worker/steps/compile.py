"""CompileST: intent -> plan agent -> a validated PlanOutput (the plan card)."""

from __future__ import annotations

from dataclasses import asdict

from services.worker.git_ops import ensure_worktree
from services.worker.policy_loader import load_policy
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import ArtifactOut, StepContext, StepOutcome, Stopwatch
from shared.db.repos.snapshots import PLAN_ARTIFACT
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.policy import PolicyError, check_plan
from shared.domain.run_machine import StepId
from shared.hashing import canonical_json, sha256_hex


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
    git = Stopwatch(ctx)
    try:
        with git.measure():
            policy = load_policy(ctx.repo_path, ctx.base_ref)
    except PolicyError as exc:
        return StepOutcome.failed(f"PolicyError: {exc}", {"step": StepId.COMPILE.value})
    with git.measure():
        worktree = ensure_worktree(ctx.repo_path, settings.workspace_dir, ctx.run_id, ctx.base_ref)
    loop = AttemptLoop(ctx, StepId.COMPILE, "plan", PLAN_OUTPUT_SCHEMA, str(worktree.path))
    for result in loop.answers(lambda n, rejected: compile_prompt(ctx.goal, n, rejected)):
        plan = result.answer
        violations = check_plan(policy, plan)
        if violations:  # never shown for approval: the plan breaks the repository's policy
            return StepOutcome.failed(
                "the plan violates the repository policy: "
                + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
                {
                    "violations": [asdict(v) for v in violations],
                    "policy": policy.to_json(),
                    "plan": plan,
                },
            )
        plan_sha = sha256_hex(canonical_json(plan))
        return StepOutcome(
            ok=True,
            output={
                "plan_sha256": plan_sha,
                "attempts": loop.records,
                "branch": worktree.branch,
                "policy": policy.to_json(),
                "git_ms": git.ms,
            },
            artifacts=[ArtifactOut.json("plan_card", PLAN_ARTIFACT, plan)],
            plan_sha256=plan_sha,
            workspace=(worktree.branch, str(worktree.path)),
        )
    return loop.failure("valid plan", schema=PLAN_OUTPUT_SCHEMA)
