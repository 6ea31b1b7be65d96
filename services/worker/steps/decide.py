"""DecideST: plan + approval + applied diff -> BuildOutput, the run's route after the build:
``verify`` with the argv that verifies it, ``done`` (nothing to verify, only where the
run's policy sets ``require_verification = false``), or ``escalate`` with a question the
approver answers before DecideST decides again (the answers are quoted in its prompt).

The agent is offered only the effective allowlist (the operator's, narrowed by the
run's policy). An answer whose argv breaks a rule (:mod:`shared.domain.exec_rules`:
a program off the allowlist, git options or aliases) fails the step closed at once,
naming the rule: the prompt listed what may run, so an agent that answers otherwise
is not given another try, as with a patch that reaches beyond the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.worker.git_ops import commit_diffstat
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    judged_commit,
    opened_worktree,
    run_policy,
)
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.exec_rules import argv_violation
from shared.domain.policy import effective_allowlist
from shared.domain.prompts import decide_prompt, plan_block
from shared.domain.rounds import Answer, RoundInputError, effective_input
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind

QUESTION_LIMIT_RULE = "question_limit"
"""An escalation past ``KODO_MAX_QUESTIONS``: each answer is another paid round whose
prompt quotes every exchange so far, and the agent chose how many there were."""


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
    commit = judged_commit(ctx)
    if commit is None:
        return StepOutcome.failed(
            "judged_commit_required: decide needs the commit ApplyPatchST judged",
            {"rule": "judged_commit_required", "plan_sha256": ctx.plan_sha256},
        )
    watch = Stopwatch(ctx)
    diffstat = _applied_diffstat(ctx, ctx.worktree_path, commit, watch)
    plan_text = plan_block(ctx.plan)
    policy = run_policy(ctx)
    try:
        exchanges = _exchanges(ctx)
    except RoundInputError as exc:
        return StepOutcome.failed(f"round_input: {exc}", {"rule": "round_input"})
    may_ask = len(exchanges) < ctx.rt.settings.max_questions
    pinned_refused: dict[str, Any] = {}  # the diagnostic's rule, if answers broke the pin
    loop = AttemptLoop(
        ctx,
        StepId.DECIDE,
        "plan",
        BUILD_OUTPUT_SCHEMA,
        str(ctx.worktree_path),
        record_with_outcome=True,  # the decision is judged and returned, nothing else
    )
    for result in loop.answers(
        lambda n, rejected: decide_prompt(
            ctx.goal,
            plan_text,
            diffstat,
            allowlist,
            n,
            rejected,
            may_skip=not policy.require_verification,
            exchanges=exchanges,
            may_ask=may_ask,
            pinned=policy.verify_commands,
        )
    ):
        decision = result.answer
        route = decision["next_action"]
        argv = [str(a) for a in decision["argv"]]
        if route == "done" and policy.require_verification:
            loop.reject(
                "require_verification: this repository's policy requires a verification"
                " command; answer verify with one"
            )
            continue
        if route == "escalate" and not may_ask:  # told it may not: a rule, not a typo
            loop.records[-1]["status"] = "refused"
            asked = ctx.rt.settings.max_questions
            return StepOutcome.failed(
                f"{QUESTION_LIMIT_RULE}: the agent asked the approver {len(exchanges)}"
                f" question(s), all it may (KODO_MAX_QUESTIONS {asked}), and asked again",
                {
                    "rule": QUESTION_LIMIT_RULE,
                    "asked": len(exchanges),
                    "max_questions": asked,
                    "attempts": loop.records,
                },
            )
        if route == "escalate" and not str(decision.get("question", "")).strip():
            loop.reject("an escalation needs a question for the approver in `question`")
            continue
        if route == "verify":
            if not argv:
                loop.reject("verify needs argv: the program and its arguments")
                continue
            unpinned = policy.verification_refusal(argv)
            if unpinned is not None:  # another try may pick a pinned one: it was told them
                loop.reject(f"{unpinned.rule}: {unpinned.detail}")
                pinned = [list(argv) for argv in policy.verify_commands or ()]
                pinned_refused = {"rule": unpinned.rule, "verify_commands": pinned}
                continue
            refused = argv_violation(argv, allowlist)
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
        output = {
            "argv": argv if route == "verify" else [],
            "next_action": route,
            "attempts": loop.records,
            "git_ms": watch.ms,
        }
        if route == "escalate":
            output["question"] = str(decision["question"]).strip()
        return StepOutcome(
            ok=True,
            output=output,
            artifacts=[ArtifactOut.json(ArtifactKind.DECISION, "decision.json", decision)],
        )
    return loop.failure("valid decision", allowlist=list(allowlist), **pinned_refused)


def _applied_diffstat(ctx: StepContext, worktree: Path, commit: str, watch: Stopwatch) -> str:
    """``git diff --stat`` of the judged commit, as ApplyPatchST recorded it beside the
    commit (no git here, on either delivery); read from the worktree's git dir for a run
    whose ApplyPatchST an older kodo ran."""
    recorded = ctx.outputs.get(StepId.APPLY_PATCH.value, {}).get("diffstat")
    if isinstance(recorded, str):
        return recorded
    with watch.measure():
        return commit_diffstat(opened_worktree(ctx, worktree), commit)


def _exchanges(ctx: StepContext) -> tuple[tuple[str, str], ...]:
    """The questions asked and answered so far (a round after an escalation)."""
    asked = effective_input(ctx.round_input)
    if asked is None or asked.get("kind") != Answer.KIND:
        return ()
    return Answer.from_json(asked).exchanges
