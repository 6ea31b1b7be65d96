"""DecideST: plan + approval + applied diff -> BuildOutput (the argv that verifies it).

The agent is offered only the effective allowlist (the operator's, narrowed by the
run's policy). An answer whose argv breaks a rule (:mod:`shared.domain.exec_rules`:
a program off the allowlist, git options or aliases) fails the step closed at once,
naming the rule: the prompt listed what may run, so an agent that answers otherwise
is not given another try, as with a patch that reaches beyond the plan.
"""

from __future__ import annotations

from services.worker.git_ops import git
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    run_policy,
)
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.exec_rules import argv_violation
from shared.domain.policy import effective_allowlist
from shared.domain.prompts import decide_prompt, plan_block
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind


def decide_step(ctx: StepContext) -> StepOutcome:
    if ctx.plan is None or ctx.approved_at is None or ctx.worktree_path is None:
        return StepOutcome.failed(
            "approved_plan_required: decide needs an approved plan and a worktree",
            {"rule": "approved_plan_required", "plan_sha256": ctx.plan_sha256},
        )
    allowlist = effective_allowlist(run_policy(ctx), ctx.rt.settings.exec_allowlist)
    if not allowlist:
        return StepOutcome.failed(
            "no program may verify this run: the policy's exec_allowlist and the operator's"
            " share none",
            {"operator": list(ctx.rt.settings.exec_allowlist), "policy": run_policy(ctx).to_json()},
        )
    watch = Stopwatch(ctx)
    with watch.measure():
        diffstat = git(ctx.worktree_path, "diff", "--stat", "HEAD~1", "HEAD")
    plan_text = plan_block(ctx.plan)
    loop = AttemptLoop(ctx, StepId.DECIDE, "plan", BUILD_OUTPUT_SCHEMA, str(ctx.worktree_path))
    for result in loop.answers(
        lambda n, rejected: decide_prompt(ctx.goal, plan_text, diffstat, allowlist, n, rejected)
    ):
        decision = result.answer
        refused = argv_violation([str(a) for a in decision["argv"]], allowlist)
        if refused is not None:
            loop.records[-1]["status"] = "refused"
            return StepOutcome.failed(
                f"{refused.rule}: {refused.detail}",
                {
                    "rule": refused.rule,
                    "argv": decision["argv"],
                    "allowlist": list(allowlist),
                    "attempts": loop.records,
                },
            )
        return StepOutcome(
            ok=True,
            output={
                "argv": decision["argv"],
                "next_action": decision["next_action"],
                "attempts": loop.records,
                "git_ms": watch.ms,
            },
            artifacts=[ArtifactOut.json(ArtifactKind.DECISION, "decision.json", decision)],
        )
    return loop.failure("valid decision", allowlist=list(allowlist))
