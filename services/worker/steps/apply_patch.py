"""ApplyPatchST: the approved plan -> build agent -> a patch, applied, judged, committed.

Refuses to run without an approval row for the run's current plan digest: no code
is modified before the plan's ``approved_at``.

The patch text is not what is judged: it is applied to the index (``git apply
--index``, which refuses some paths itself, a first line only), then git is asked what
actually changed and :func:`shared.domain.change_check.check_changes` judges that
against the approved plan and the run's policy. A patch that does not apply is
retried, unless git refused it for a path leaving the worktree or reaching .git (that
is ``confinement``, not a typo). A patch whose effect breaks the plan or the policy is
undone and fails the step closed (not retried, not sent back for a new approval): the
approver signed one plan, and an agent that reaches beyond it gets no other try.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.worker.git_ops import (
    commit_index,
    committed_changes,
    ensure_clean,
    git,
    head_trailer,
    staged_changes,
    try_apply,
)
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    run_policy,
)
from shared.domain.change_check import (
    ChangeReport,
    IndexChange,
    check_changes,
    confinement_refusal,
)
from shared.domain.contracts import PATCH_OUTPUT_SCHEMA
from shared.domain.policy import Policy, diff_stats
from shared.domain.prompts import apply_prompt, plan_block
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex

PATCH_TRAILER = "Kodo-Patch-Sha256"


@dataclass(frozen=True)
class _Rejected:
    """The patch does not apply (or changes nothing): the agent may try again."""

    reason: str


@dataclass(frozen=True)
class _Refused:
    """What the patch changed breaks the plan or the policy: undone, fail closed."""

    report: ChangeReport
    changes: list[IndexChange]


@dataclass(frozen=True)
class _Committed:
    commit: str
    report: ChangeReport
    changes: list[IndexChange]


def _commit_patch(
    ctx: StepContext, worktree: Path, diff: str, patch_sha: str, summary: str, policy: Policy
) -> _Committed | _Rejected | _Refused:
    """Apply the patch, judge its effect, commit it (or find an earlier delivery's commit)."""
    plan = ctx.plan or {}
    if not ctx.first_delivery and head_trailer(worktree, PATCH_TRAILER) == patch_sha:
        # applied, judged and committed by an earlier delivery that died before recording
        changes = committed_changes(worktree)
        report = check_changes(changes, plan, policy)
        if report.violations:  # never committed by this code; whatever made it goes
            git(worktree, "reset", "-q", "--hard", "HEAD~1")
            return _Refused(report, changes)
        return _Committed(git(worktree, "rev-parse", "HEAD").strip(), report, changes)
    ensure_clean(worktree)
    reason = try_apply(worktree, diff)
    if reason is not None:
        refusal = confinement_refusal(reason)
        if refusal is not None:  # git itself saw a path leaving the worktree: not a typo
            return _Refused(ChangeReport([refusal], (), (), 0), [])
        return _Rejected(f"PatchDoesNotApply: {reason}")
    changes = staged_changes(worktree)
    if not changes:
        ensure_clean(worktree)
        return _Rejected("the patch changes nothing")
    report = check_changes(changes, plan, policy)
    if report.violations:
        ensure_clean(worktree)  # undo it: nothing the plan did not allow stays on disk
        return _Refused(report, changes)
    message = (
        f"kodo: {ctx.goal[:60]}\n\n{summary}\n\n"
        f"Kodo-Run: {ctx.run_id}\nKodo-Plan-Sha256: {ctx.plan_sha256}\n"
        f"Kodo-Approved-At: {ctx.approved_at}\n{PATCH_TRAILER}: {patch_sha}\n"
    )
    return _Committed(commit_index(worktree, message), report, changes)


def apply_patch_step(ctx: StepContext) -> StepOutcome:
    if ctx.plan_sha256 is not None and ctx.approved_at is not None and ctx.plan is None:
        return StepOutcome.failed(
            "plan_matches_digest: the stored plan.json does not hash to the approved digest:"
            " refusing to modify code",
            {"plan_sha256": ctx.plan_sha256, "approved_at": ctx.approved_at},
        )
    if ctx.plan_sha256 is None or ctx.approved_at is None or ctx.plan is None:
        return StepOutcome.failed(
            "no approval for the current plan: refusing to modify code",
            {"plan_sha256": ctx.plan_sha256, "approved_at": ctx.approved_at},
        )
    if ctx.worktree_path is None:
        return StepOutcome.failed("the run has no worktree", {})
    worktree = ctx.worktree_path
    policy = run_policy(ctx)
    plan_text = plan_block(ctx.plan)
    loop = AttemptLoop(ctx, StepId.APPLY_PATCH, "build", PATCH_OUTPUT_SCHEMA, str(worktree))
    git_time = Stopwatch(ctx)
    for result in loop.answers(lambda n, rejected: apply_prompt(ctx.goal, plan_text, n, rejected)):
        diff = result.answer["diff"]
        patch_sha = sha256_hex(diff)
        loop.records[-1].update(patch_sha256=patch_sha, patch_lines=diff_stats(diff).lines)
        with git_time.measure():
            applied = _commit_patch(
                ctx, worktree, diff, patch_sha, result.answer["summary"], policy
            )
        if isinstance(applied, _Rejected):
            loop.reject(applied.reason)
            continue
        if isinstance(applied, _Refused):
            loop.records[-1]["status"] = "refused"
            violations = applied.report.violations
            return StepOutcome.failed(
                "the patch's effect breaks the approved plan or the repository policy: "
                + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
                {
                    **applied.report.to_json(),
                    "changes": [c.to_json() for c in applied.changes],
                    "policy": policy.to_json(),
                    "attempts": loop.records,
                    "patch_sha256": patch_sha,
                },
            )
        loop.records[-1]["status"] = "applied"
        report = applied.report
        return StepOutcome(
            ok=True,
            output={
                "commit": applied.commit,
                "patch_sha256": patch_sha,
                "changes": [c.to_json() for c in applied.changes],
                "new_executables": list(report.executables),
                "planned_but_untouched": list(report.untouched),
                "lines": report.lines,
                "attempts": loop.records,
                "git_ms": git_time.ms,
            },
            artifacts=[ArtifactOut(ArtifactKind.PATCH, "patch.diff", diff.encode(), "text/x-diff")],
        )
    return loop.failure("applicable patch")
