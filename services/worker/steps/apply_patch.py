"""ApplyPatchST: the approved plan -> build agent -> a confined patch, applied and committed.

Refuses to run without an approval row for the run's current plan digest: no code
is modified before the plan's ``approved_at``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from services.worker.git_ops import (
    UnsafePatch,
    check_confined,
    commit_index,
    ensure_clean,
    git,
    has_symlink_escape,
    head_trailer,
    try_apply,
)
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    plan_block,
    run_policy,
)
from shared.domain.contracts import PATCH_OUTPUT_SCHEMA
from shared.domain.policy import check_patch, diff_stats
from shared.domain.run_machine import StepId
from shared.hashing import sha256_hex

PATCH_TRAILER = "Kodo-Patch-Sha256"


def apply_prompt(goal: str, plan_text: str, attempt: int, rejected: list[str]) -> str:
    lines = [
        "Implement the approved plan below. Answer with a unified git diff (paths relative to",
        "the repository root, `diff --git a/... b/...` headers) and a one-line summary.",
        "",
        f"Intent: {goal}",
        plan_text,
        "",
        f"kodo-attempt: {attempt}",
    ]
    if rejected:
        lines += ["", "Your previous patches were rejected:", *(f"- {r}" for r in rejected)]
    return "\n".join(lines)


def _vet(worktree: Path, diff: str) -> str | None:
    """None if the diff only touches paths inside the worktree; else why not."""
    try:
        paths = check_confined(diff)
    except UnsafePatch as exc:
        return f"UnsafePatch: {exc}"
    escaped = has_symlink_escape(worktree, paths)
    if escaped is not None:
        return f"UnsafePatch: {escaped!r} resolves outside the worktree"
    return None


@dataclass(frozen=True)
class _Rejected:
    reason: str


def _commit_patch(
    ctx: StepContext, worktree: Path, diff: str, patch_sha: str, summary: str
) -> str | _Rejected:
    """Apply and commit the patch (or find an earlier delivery's commit of it)."""
    if not ctx.first_delivery and head_trailer(worktree, PATCH_TRAILER) == patch_sha:
        # applied and committed by an earlier delivery that died before recording
        return git(worktree, "rev-parse", "HEAD").strip()
    ensure_clean(worktree)
    problem = _vet(worktree, diff)
    if problem is not None:
        return _Rejected(problem)
    if ctx.rt.settings.fault_pause_before_apply_s:  # test-only fault injection
        time.sleep(ctx.rt.settings.fault_pause_before_apply_s)
    reason = try_apply(worktree, diff)
    if reason is not None:
        return _Rejected(f"PatchDoesNotApply: {reason}")
    message = (
        f"kodo: {ctx.goal[:60]}\n\n{summary}\n\n"
        f"Kodo-Run: {ctx.run_id}\nKodo-Plan-Sha256: {ctx.plan_sha256}\n"
        f"Kodo-Approved-At: {ctx.approved_at}\n{PATCH_TRAILER}: {patch_sha}\n"
    )
    return commit_index(worktree, message)


def apply_patch_step(ctx: StepContext) -> StepOutcome:
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
        violations = check_patch(policy, diff_stats(diff))
        if violations:  # a policy breach is not retried: fail closed with the evidence
            return StepOutcome.failed(
                "the patch violates the repository policy: "
                + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
                {
                    "violations": [asdict(v) for v in violations],
                    "policy": policy.to_json(),
                    "attempts": loop.records,
                    "patch_sha256": sha256_hex(diff),
                },
            )
        patch_sha = sha256_hex(diff)
        loop.records[-1]["patch_sha256"] = patch_sha
        with git_time.measure():
            applied = _commit_patch(ctx, worktree, diff, patch_sha, result.answer["summary"])
        if isinstance(applied, _Rejected):
            loop.reject(applied.reason)
            continue
        commit = applied
        loop.records[-1]["status"] = "applied"
        return StepOutcome(
            ok=True,
            output={
                "commit": commit,
                "patch_sha256": patch_sha,
                "attempts": loop.records,
                "git_ms": git_time.ms,
            },
            artifacts=[ArtifactOut("patch", "patch.diff", diff.encode(), "text/x-diff")],
        )
    return loop.failure("applicable patch")
