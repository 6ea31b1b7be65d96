"""CompileST: intent -> plan agent -> a validated PlanOutput (the plan card).

The worktree is made at the commit pinned at submit and the plan is judged by the
policy fixed at submit (trusted ref and base_ref, strictest), never re-read here. A base
commit holding a symlink that resolves outside the worktree fails the run (rule
``symlink``) before any agent turn: the daemon's tools would follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.worker.git_ops import (
    CheckoutBounds,
    Worktree,
    checkout_refusal,
    ensure_worktree,
    escaping_links,
    run_branch,
    tree_names,
)
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    pinning,
)
from services.worker.worktree_guard import shown_path
from shared.domain.change_check import (
    FoldedTwins,
    ModuleShadows,
    PlanAgainstBase,
    check_plan,
    guarded_modules,
    imports_as,
    runner_configuration,
    runner_shadows,
    top_level_module,
)
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.policy import MAKE, VERIFY_PINNED_RULE, Policy, Violation
from shared.domain.prompts import compile_prompt
from shared.domain.rounds import ChangeRequest, RoundInputError, effective_input
from shared.domain.run_machine import StepId
from shared.domain.step_outcome import PLAN_ARTIFACT
from shared.domain.vocab import ArtifactKind
from shared.git_dir import GIT_DIR_RULE, alternates_refusal
from shared.hashing import canonical_bytes, sha256_hex


def compile_step(ctx: StepContext) -> StepOutcome:
    settings = ctx.rt.settings
    if ctx.intent_policy is None or ctx.base_commit is None:
        return StepOutcome.failed(
            "the intent records no policy or base commit (submitted before pinning)",
            {"step": StepId.COMPILE.value},
        )
    policy = Policy.from_json(ctx.intent_policy)
    borrowed = alternates_refusal(ctx.repo_path / ".git", settings.repo_roots)
    if borrowed is not None:  # changed since the submit checked it
        return StepOutcome.failed(borrowed, {"rule": GIT_DIR_RULE})
    if not (settings.workspace_dir / ctx.run_id / ".git").exists():  # a first checkout
        bounds = CheckoutBounds.of_worktree(settings.exec_worktree_bytes)
        too_large = checkout_refusal(ctx.repo_path, ctx.base_commit, bounds)
        if too_large is not None:
            return StepOutcome.failed(too_large[1], {"rule": too_large[0]})
    git = Stopwatch(ctx)
    with git.measure():
        worktree = ensure_worktree(
            ctx.repo_path,
            settings.workspace_dir,
            ctx.run_id,
            ctx.base_commit,
            bwrap=pinning(ctx),
        )
        links = escaping_links(worktree, ctx.base_commit)
    outcome = _escaping_links_refused(links) if links else _plan(ctx, policy, worktree, git)
    # recorded whatever the outcome: a failed run's worktree is cleaned up like any other
    outcome.workspace = (run_branch(ctx.run_id), str(worktree.path))
    return outcome


def _escaping_links_refused(links: list[tuple[str, str]]) -> StepOutcome:
    """No agent turn runs on a checkout with a way out: fail closed, naming the links."""
    shown = [(shown_path(path), shown_path(target)) for path, target in links]
    listed = ", ".join(f"{path} -> {target}" for path, target in shown[:20])
    return StepOutcome.failed(
        f"symlink: the base commit holds symlinks that lead out of the worktree ({listed});"
        " an agent's tools would reach other runs' worktrees through them",
        {"rule": "symlink", "links": [{"path": p, "target": t} for p, t in shown]},
    )


def _plan(ctx: StepContext, policy: Policy, worktree: Worktree, git: Stopwatch) -> StepOutcome:
    try:
        request = _change_request(ctx)
    except (RoundInputError, ValueError) as exc:
        return StepOutcome.failed(
            f"round_input: {exc}", {"rule": "round_input", "round": ctx.round}
        )
    revision = None if request is None or ctx.plan is None else (ctx.plan, request.comment)
    loop = AttemptLoop(
        ctx,
        StepId.COMPILE,
        "plan",
        PLAN_OUTPUT_SCHEMA,
        str(worktree.path),
        record_with_outcome=True,  # the plan is judged and returned, nothing else
    )
    for result in loop.answers(
        lambda n, rejected: compile_prompt(ctx.goal, n, rejected, revision=revision)
    ):
        plan = result.answer
        signed = canonical_bytes(plan)  # plan.json is these bytes; the digest is theirs
        plan_sha = sha256_hex(signed)
        if request is not None and plan_sha in request.earlier_plans:
            loop.reject(
                "the plan is identical to an earlier revision: the reviewer asked for changes"
            )
            continue
        violations = check_plan(policy, plan)
        if not violations:
            with git.measure():
                programs = policy.pinned_programs()
                base = _against_base(worktree, plan, _guarded(policy, programs), programs)
            refused = [v for v in (base.twins, base.shadow, base.hidden) if v is not None]
            if not refused and base.disagreement is not None:  # could never land as it reads
                loop.reject(f"{base.disagreement.rule}: {base.disagreement.detail}")
                continue
            violations = refused
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
        return StepOutcome(
            ok=True,
            output={
                "plan_sha256": plan_sha,
                "revision": request.revision if request is not None else 1,
                "attempts": loop.records,
                "branch": run_branch(ctx.run_id),
                "base_commit": ctx.base_commit,
                "policy": policy.to_json(),
                "git_ms": git.ms,
            },
            artifacts=[ArtifactOut.signed_json(ArtifactKind.PLAN_CARD, PLAN_ARTIFACT, signed)],
            plan_sha256=plan_sha,
        )
    return loop.failure("valid plan", schema=PLAN_OUTPUT_SCHEMA)


@dataclass(frozen=True)
class _BaseVerdict:
    twins: Violation | None
    disagreement: Violation | None
    shadow: Violation | None
    hidden: Violation | None


def _against_base(
    worktree: Worktree,
    plan: dict[str, Any],
    pinned: frozenset[str],
    programs: frozenset[str] = frozenset(),
) -> _BaseVerdict:
    """The plan's names against the base tree, read once: a name it brings that is
    another of the tree on macOS or Windows (``Calc.py`` beside ``calc.py``: drawn alike
    on the approver's screen, so never shown; ApplyPatchST judges the patch's own names
    again), entries the tree does not bear out (:class:`PlanAgainstBase`), and a name
    that would replace a pinned ``python -m`` runner the tree does not hold itself
    (:func:`runner_shadows`) or that it reads as its configuration
    (:func:`runner_configuration`), and a new file Python would import in place of a
    module the tree holds (:class:`ModuleShadows`)."""
    twins = FoldedTwins.of_plan(plan)
    agreement = PlanAgainstBase(plan)
    hidden = ModuleShadows(plan)
    guarded = guarded_modules(pinned)
    shadows = runner_shadows(plan, guarded)
    own = set()  # guarded modules the base tree holds itself (the repository's package)
    for name in tree_names(worktree, "HEAD"):  # the worktree is at the base commit
        twins.feed(name)
        agreement.feed(name)
        hidden.feed(name)
        # a guarded module counts as the repository's own only for a file Python imports
        # it from (M.py, M/__init__.py): a base locale/ of .po files let a plan add
        # locale/__init__.py (red-team helper-107), a base unittest/ holding a C file
        # unittest/__main__.py (helper-113)
        module = top_level_module(name) if shadows else None
        if module in guarded and imports_as(name) == module:
            own.add(module)
    shadowing = {path: module for path, module in shadows.items() if module not in own}
    named = [
        f"{shown_path(path)} would be imported by python -m {module}"
        if module in pinned
        else f"{shown_path(path)} would be imported in place of {module}, which the runner imports"
        for path, module in sorted(shadowing.items())
    ]
    configured = runner_configuration(plan, pinned | programs)
    named += [
        f"{shown_path(path)} is read by {_runner_shown(module)} as its configuration or a plugin"
        for path, module in sorted(configured.items())
    ]
    shadow = None
    if named:
        shadow = Violation(
            VERIFY_PINNED_RULE,
            f"the plan brings what a pinned verification runner reads ({'; '.join(named[:10])}):"
            " the pinned command would run the patch's program or options, not the runner's",
            tuple(sorted({*shadowing, *configured})),
        )
    return _BaseVerdict(twins.violation(), agreement.violation(), shadow, hidden.violation())


RUNNERS_A_MAKE_MAY_RUN = frozenset({"unittest", "pytest"})
"""What a pinned make's recipe may run inside: its rules are not read here, so a change
gets the protections of each (a difflib.py under unittest, a conftest.py under pytest
had passed a broken add under a pinned make test: red-team helper-132)."""


def _guarded(policy: Policy, programs: frozenset[str]) -> frozenset[str]:
    """The runner modules whose inputs a change must leave alone: the pinned ones, and
    under a pinned make, those its recipe may run."""
    pinned = policy.pinned_modules()
    return pinned | RUNNERS_A_MAKE_MAY_RUN if MAKE in programs else pinned


def _runner_shown(runner: str) -> str:
    return runner if runner == MAKE else f"python -m {runner}"


def _change_request(ctx: StepContext) -> ChangeRequest | None:
    """The first plan comes from the intent alone; a revision revises the run's current
    plan as the reviewer asked, and must have that very plan to quote (else fail
    closed). A retried round is asked what the round it resumes was asked."""
    asked = effective_input(ctx.round_input)
    if asked is None:
        return None
    request = ChangeRequest.from_json(asked)
    if ctx.plan is None or ctx.plan_sha256 != request.previous_plan_sha256:
        raise ValueError(
            "the plan the reviewer commented on is not the run's current plan"
            f" ({request.previous_plan_sha256} vs {ctx.plan_sha256})"
        )
    return request
