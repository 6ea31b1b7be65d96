"""DecideST: plan + approval + applied diff -> BuildOutput (the argv that verifies it)."""

from __future__ import annotations

from services.worker.git_ops import git
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    plan_block,
)
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId


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
    watch = Stopwatch(ctx)
    with watch.measure():
        diffstat = git(ctx.worktree_path, "diff", "--stat", "HEAD~1", "HEAD")
    plan_text = plan_block(ctx.plan)
    loop = AttemptLoop(ctx, StepId.DECIDE, "plan", BUILD_OUTPUT_SCHEMA, str(ctx.worktree_path))
    for result in loop.answers(
        lambda n, _: decide_prompt(ctx.goal, plan_text, diffstat, settings.exec_allowlist, n)
    ):
        decision = result.answer
        return StepOutcome(
            ok=True,
            output={
                "argv": decision["argv"],
                "next_action": decision["next_action"],
                "attempts": loop.records,
                "git_ms": watch.ms,
            },
            artifacts=[ArtifactOut.json("decision", "decision.json", decision)],
        )
    return loop.failure("valid decision")
