"""CompileST: intent -> plan agent -> a validated PlanOutput (the plan card).

The worktree is made at the commit pinned at submit and the plan is judged by the
policy fixed at submit (trusted ref and base_ref, strictest), never re-read here.
"""

from __future__ import annotations

from services.worker.git_ops import ensure_worktree
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import ArtifactOut, StepContext, StepOutcome, Stopwatch
from shared.db.repos.snapshots import PLAN_ARTIFACT
from shared.domain.change_check import check_plan
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.policy import Policy
from shared.domain.prompts import compile_prompt
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import canonical_bytes, sha256_hex


def compile_step(ctx: StepContext) -> StepOutcome:
    settings = ctx.rt.settings
    if ctx.intent_policy is None or ctx.base_commit is None:
        return StepOutcome.failed(
            "the intent records no policy or base commit (submitted before pinning)",
            {"step": StepId.COMPILE.value},
        )
    policy = Policy.from_json(ctx.intent_policy)
    git = Stopwatch(ctx)
    with git.measure():
        worktree = ensure_worktree(
            ctx.repo_path, settings.workspace_dir, ctx.run_id, ctx.base_commit
        )
    loop = AttemptLoop(ctx, StepId.COMPILE, "plan", PLAN_OUTPUT_SCHEMA, str(worktree.path))
    for result in loop.answers(lambda n, rejected: compile_prompt(ctx.goal, n, rejected)):
        plan = result.answer
        violations = check_plan(policy, plan)
        if violations:  # never shown for approval: the plan breaks the repository's policy
            return StepOutcome.failed(
                "the plan violates the repository policy: "
                + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
                {
                    "violations": [v.to_json() for v in violations],
                    "policy": policy.to_json(),
                    "plan": plan,
                },
            )
        signed = canonical_bytes(plan)  # plan.json is these bytes; the digest is theirs
        plan_sha = sha256_hex(signed)
        return StepOutcome(
            ok=True,
            output={
                "plan_sha256": plan_sha,
                "attempts": loop.records,
                "branch": worktree.branch,
                "base_commit": ctx.base_commit,
                "policy": policy.to_json(),
                "git_ms": git.ms,
            },
            artifacts=[ArtifactOut.signed_json(ArtifactKind.PLAN_CARD, PLAN_ARTIFACT, signed)],
            plan_sha256=plan_sha,
            workspace=(worktree.branch, str(worktree.path)),
        )
    return loop.failure("valid plan", schema=PLAN_OUTPUT_SCHEMA)
