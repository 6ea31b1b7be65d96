"""ApplyPatchST: the approved plan -> the build agent edits the worktree -> kodo commits.

Refuses to run without an approval row for the run's current plan digest: no code
is modified before the plan's ``approved_at``.

The agent changes files with its allowlisted tools (edit, write, patch) in the run's
worktree and answers with a summary and the files it says it changed. kodo never
takes its word for the change: it stages everything the agent left (ignored files
too), asks git what changed, and :func:`shared.domain.change_check.check_changes`
judges that against the approved plan and the run's policy. A change that breaks the
plan or the policy fails the step closed (not retried: the approver signed one plan,
and an agent that reaches beyond it gets no other try) and is undone; the verdict is
recorded on the call's ledger row first, so a redelivery fails the same way. An answer
whose file list disagrees with git, or an attempt that changed nothing, is retried with
the reason (also recorded on the row: a replay reaches the same verdict).

Recovery (a worker may die anywhere, and a daemon may still be editing after its
worker died):

- before this delivery sends an attempt's call, earlier calls of the step that the
  ledger cannot vouch for are aborted and must be idle at the daemon (else the attempt
  fails ``worktree_quiet`` and is retried later); only then is the worktree reset to
  HEAD, so a failed or abandoned attempt's edits never mix with the next one's;
- a replayed attempt (its call finished before) takes the worktree as it lies: its
  edits are what that call left;
- a commit carries the attempt's op_key as a trailer, so a redelivery after the
  commit re-judges that commit instead of committing twice.
"""

from __future__ import annotations

import posixpath
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from services.worker.git_ops import (
    UNFAITHFUL_RULE,
    GitError,
    Patch,
    PatchTooLarge,
    TooManyChanges,
    Worktree,
    admit,
    bound_change_since,
    changes_since,
    commit_index,
    committed_changes,
    committed_patch,
    escaping_links,
    git,
    head_trailer,
    pinned,
    quarantined,
    reset_worktree,
    stage_edits,
    staged_patch,
    staged_sizes,
    staged_tree,
    tree_names,
    unfaithful_paths,
)
from services.worker.steps.attempts import AttemptLoop
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    opened_worktree,
    run_policy,
)
from services.worker.worktree_guard import (
    SPECIAL_RULE,
    shown_path,
    special_files_problem,
    worktree_gitdir_problem,
)
from shared.domain.change_check import (
    MAX_FILE_BYTES_RULE,
    MAX_PATCH_BYTES_RULE,
    PATH_ENCODING_RULE,
    SYMLINK,
    ChangeReport,
    FoldedTwins,
    IndexChange,
    check_changes,
    staging_refusal,
    unreadable_names,
)
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.domain.display import visible
from shared.domain.policy import Policy, Violation
from shared.domain.prompts import apply_prompt, plan_brief
from shared.domain.ran_tests import RULE as RAN_NOTHING
from shared.domain.rounds import RepairRequest, RoundInputError, effective_input
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.gitcmd import GitTimeout
from shared.hashing import sha256_hex
from shared.opencode.calls import StructuredResult
from shared.opencode.errors import WorktreeBusy
from shared.real_path import resolved

PATCH_TRAILER = "Kodo-Patch-Sha256"
OP_KEY_TRAILER = "Kodo-Op-Key"

log = structlog.get_logger("kodo.step")


@dataclass(frozen=True)
class _Rejected:
    """The attempt is unusable (changed nothing, or said it changed other files)."""

    reason: str


@dataclass(frozen=True)
class _Refused:
    """What the agent changed breaks the plan or the policy: fail closed."""

    report: ChangeReport
    changes: list[IndexChange]

    @classmethod
    def by(cls, violation: Violation, changes: list[IndexChange]) -> _Refused:
        """Refused for ``violation`` alone, before the whole change was judged."""
        return cls(ChangeReport([violation], (), (), 0), changes)


@dataclass(frozen=True)
class _Judged:
    """A staged change that passed every judgement, not committed yet."""

    report: ChangeReport
    changes: list[IndexChange]
    patch: Patch


@dataclass(frozen=True)
class _Committed:
    commit: str
    report: ChangeReport
    changes: list[IndexChange]
    patch: Patch


def _touched(changes: list[IndexChange]) -> set[str]:
    return {c.path for c in changes} | {c.source for c in changes if c.source and c.status == "R"}


def _claimed(worktree: Path, files: list[str]) -> set[str]:
    """The agent's file list as repository paths (absolute paths under the worktree too)."""
    root = str(resolved(worktree))
    paths = set()
    for raw in files:
        path = raw[len(root) + 1 :] if raw.startswith(root + "/") else raw
        paths.add(posixpath.normpath(path.removeprefix("./")))
    return paths


def files_mismatch(worktree: Path, changes: list[IndexChange], files: list[str]) -> str | None:
    """Why the answer's ``files`` disagree with git, or None (a rename's source may be
    named or not)."""
    claimed, touched = _claimed(worktree, files), _touched(changes)
    unsaid = sorted({c.path for c in changes} - claimed)
    phantom = sorted(claimed - touched)
    if not unsaid and not phantom:
        return None
    said = []
    if unsaid:
        said.append(f"git shows changes to {', '.join(unsaid)} that the answer does not list")
    if phantom:
        said.append(f"the answer lists {', '.join(phantom)}, which git shows unchanged")
    return "files_mismatch: " + "; ".join(said)


def _base(ctx: StepContext) -> str:
    if ctx.base_commit is None:
        raise GitError("a repair needs the run's base commit to judge its change whole")
    return ctx.base_commit


def _judged(
    ctx: StepContext, worktree: Worktree, changes: list[IndexChange], *, staged: bool, repair: bool
) -> list[IndexChange]:
    """The change the plan and the policy judge: the attempt's own, or for a repair the
    whole change since the commit the plan was approved against (a repair edits a file
    the first build added; judged alone, that would read as a modify, not the planned add)."""
    if not repair:
        return changes
    return changes_since(worktree, _base(ctx), staged=staged)


def _take_edits(
    ctx: StepContext, worktree: Worktree, result: StructuredResult, policy: Policy, *, repair: bool
) -> _Committed | _Rejected | _Refused:
    """Judge and commit what the attempt's call left in the worktree (or find the commit
    an earlier delivery made of it)."""
    plan = ctx.plan or {}
    if not ctx.first_delivery and head_trailer(worktree, OP_KEY_TRAILER) == result.op_key:
        # judged and committed by an earlier delivery that died before recording
        changes = committed_changes(worktree)
        judged = _judged(ctx, worktree, changes, staged=False, repair=repair)
        report = check_changes(judged, plan, policy)
        head = git(worktree, "rev-parse", "HEAD").strip()
        patch = committed_patch(worktree, max_bytes=policy.max_patch_bytes)  # judged as staged
        if repair:  # as _stage_and_judge judged it: committed, it passed the bound
            bound_change_since(worktree, _base(ctx), "HEAD", max_bytes=policy.max_patch_bytes)
        return _Committed(head, report, changes, patch)
    with quarantined(worktree, ctx.rt.settings.workspace_dir) as held:
        taken = _stage_and_judge(ctx, held, result, policy, repair=repair)
        if not isinstance(taken, _Judged):
            return taken  # what git staged never reaches the repository's store
        admit(held, [c.new_blob for c in taken.changes if c.status != "D"])
    # No word of the agent's: the commit is delivered, and a summary such as "[skip ci]
    # Fixes #1", terminal escapes or a forged Kodo-Op-Key line would act on the remote's
    # CI, its issues and every `git log` (its summary stays in the step's output)
    message = (
        f"kodo: {visible(ctx.goal[:60])}\n\n"
        f"Kodo-Run: {ctx.run_id}\nKodo-Plan-Sha256: {ctx.plan_sha256}\n"
        f"Kodo-Approved-At: {ctx.approved_at}\n{PATCH_TRAILER}: {sha256_hex(taken.patch.diff)}\n"
        f"{OP_KEY_TRAILER}: {result.op_key}\n"
    )
    commit = commit_index(worktree, message)
    return _Committed(commit, taken.report, taken.changes, taken.patch)


def _stage_and_judge(
    ctx: StepContext, worktree: Worktree, result: StructuredResult, policy: Policy, *, repair: bool
) -> _Judged | _Rejected | _Refused:
    """Stage what the attempt left in the worktree and judge it: faithful to the disk
    first, then the plan, the policy, the links and the answer's own list of files."""
    plan = ctx.plan or {}
    try:
        changes = stage_edits(
            worktree,
            most=_readable_changes(policy, repair=repair),
            most_bytes=policy.max_file_bytes,
        )
    except TooManyChanges as exc:  # refused before a file of it is read
        violation = Violation("max_files", f"{exc} (max_files {policy.max_files})")
        return _Refused.by(violation, [])
    except GitError as exc:  # a path git refuses to index (a '.GIT' folder, a bare nest)
        refusal = staging_refusal(str(exc))
        if refusal is None:
            raise
        return _Refused.by(refusal, [])
    if not changes:
        return _Rejected("the attempt changed nothing in the worktree")
    unreadable = unreadable_names(changes)
    if unreadable:  # before any rule reads a name: two could read as one, or as a planned one
        said = (
            f"{', '.join(shown_path(p) for p in unreadable[:20])}: a file name that is not"
            " UTF-8 text (each such byte reads as U+FFFD)"
        )
        violation = Violation(PATH_ENCODING_RULE, said, tuple(unreadable))
        return _Refused.by(violation, changes)
    twins = FoldedTwins.of_changes(changes)
    if twins.brings_names:  # a name that is another on macOS or Windows: before any rule
        for name in tree_names(worktree, "HEAD"):
            twins.feed(name)
        collision = twins.violation()
        if collision is not None:
            return _Refused.by(collision, changes)
    sizes = staged_sizes(worktree, changes)
    oversized = sorted(c.path for c in changes if sizes.get(c.new_blob, 0) > policy.max_file_bytes)
    if oversized:  # before a byte of them is read: each would be hashed whole, then diffed
        said = (
            f"{', '.join(oversized[:20])}: over {policy.max_file_bytes} bytes"
            f" (max_file_bytes {policy.max_file_bytes})"
        )
        violation = Violation(MAX_FILE_BYTES_RULE, said, tuple(oversized))
        return _Refused.by(violation, _unread(changes, oversized))
    unfaithful = unfaithful_paths(worktree, changes, sizes)  # first: judge only what is on disk
    if unfaithful:
        said = (
            f"{', '.join(unfaithful)}: the bytes on disk are not what git staged (a"
            " .gitattributes conversion such as ident or working-tree-encoding, or a file"
            " changed or swapped while git read it); the command would run what nobody"
            " judged"
        )
        violation = Violation(UNFAITHFUL_RULE, said, tuple(unfaithful))
        return _Refused.by(violation, _unread(changes, unfaithful))
    judged = _judged(ctx, worktree, changes, staged=True, repair=repair)
    report = check_changes(judged, plan, policy)
    if report.violations:
        return _Refused(report, judged)
    if any(c.new_mode == SYMLINK for c in changes):  # only a policy with allow_symlinks
        escaping = [(shown_path(p), shown_path(t)) for p, t in escaping_links(worktree)]
        if escaping:
            said = ", ".join(f"{path} -> {target}" for path, target in escaping[:20])
            violation = Violation(
                "symlink",
                f"with the new links, symlinks lead out of the worktree: {said}",
                tuple(path for path, _ in escaping),
            )
            return _Refused.by(violation, judged)
    mismatch = files_mismatch(worktree.path, changes, list(result.answer["files"]))
    if mismatch is not None:
        return _Rejected(mismatch)
    tree = staged_tree(worktree)
    try:
        patch = staged_patch(worktree, max_bytes=policy.max_patch_bytes, tree=tree)
        if repair:  # the run's whole change is bounded, not each round's
            bound_change_since(worktree, _base(ctx), tree, max_bytes=policy.max_patch_bytes)
    except PatchTooLarge as exc:  # one long line passes max_lines: the bytes bound it
        said = f"{exc} (the change since the base commit)" if repair else str(exc)
        violation = Violation(MAX_PATCH_BYTES_RULE, said, tuple(c.path for c in changes))
        report = ChangeReport([violation], report.executables, report.untouched, report.lines)
        return _Refused(report, judged)
    return _Judged(report, changes, patch)


LISTED = 100
"""The changes, and each violation's paths, a refusal's diagnostic lists (the rest are
counted): an agent picks how many files it leaves, and listing 2,000 paths of 4 kB
took the diagnostic's capping two minutes and cut away the rules' names."""
DETAIL_SHOWN = 1000  # characters of each violation's detail in the run's error


def refusal_diagnostic(report: ChangeReport, changes: list[IndexChange]) -> dict[str, Any]:
    """What a refused change records: the rules it broke first (small, never cut), then
    the report and the changes, each list at most :data:`LISTED` long."""
    shown = report.to_json()
    for violation in shown["violations"]:
        paths = violation["paths"]
        if len(paths) > LISTED:
            violation.update(paths=paths[:LISTED], paths_total=len(paths))
        violation["detail"] = violation["detail"][: DETAIL_SHOWN * 4]
    listed: dict[str, Any] = {"changes": [c.to_json() for c in changes[:LISTED]]}
    if len(changes) > LISTED:
        listed["changes_total"] = len(changes)
    rules = sorted({v.rule for v in report.violations})
    return {"rules": rules, **shown, **listed}


def _reset_after_deadline(worktree: Worktree) -> None:
    """Undo what the agent left, after git ran out of time judging it. The reset runs
    on the same files and may run out of time too: then the run's cleanup removes the
    worktree (the run has failed), and the failure is logged."""
    try:
        reset_worktree(worktree)
    except (GitError, GitTimeout) as exc:
        log.warning("worktree.reset_failed", path=str(worktree.path), error=str(exc))


def _readable_changes(policy: Policy, *, repair: bool) -> int:
    """How many changes an attempt may leave and still be read one by one. A first
    build's change is judged whole: past max_files it is refused. A repair's is judged
    with the build's before it, which it may undo: each of its paths is one the build
    changed or one the whole change does, so past twice max_files (four times: a rename
    names two paths) the whole change cannot fit either."""
    return policy.max_files * 4 if repair else policy.max_files


def _unread(changes: list[IndexChange], unfaithful: list[str]) -> list[IndexChange]:
    """``changes`` with nothing read from the staged blobs of ``unfaithful`` paths (their
    line counts): git may have read those through a link swapped in, from anywhere."""
    off = set(unfaithful)
    return [
        replace(c, added=None, removed=None, link_target=None) if c.path in off else c
        for c in changes
    ]


def _quiet_and_clean(
    ctx: StepContext, worktree: Worktree, git_time: Stopwatch | None = None
) -> None:
    """Before a new attempt's call: no earlier call still editing, then back to HEAD
    (the reset counted in ``git_time``)."""
    ctx.rt.oc.quiesce(ctx.run_id, StepId.APPLY_PATCH.value, str(worktree.path))
    problem = worktree_gitdir_problem(worktree.path, ctx.repo_path)
    if problem is not None:  # never run git in a worktree whose .git was rewritten
        raise WorktreeBusy(problem)
    with git_time.measure() if git_time is not None else nullcontext():
        reset_worktree(worktree)


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
    worktree = opened_worktree(ctx, ctx.worktree_path)
    policy = run_policy(ctx)
    plan_text = plan_brief(ctx.plan)
    loop = AttemptLoop(ctx, StepId.APPLY_PATCH, "build", EDIT_REPORT_SCHEMA, str(worktree.path))
    git_time = Stopwatch(ctx)
    try:
        repair = _repair_request(ctx)
    except RoundInputError as exc:
        return StepOutcome.failed(f"round_input: {exc}", {"rule": "round_input"})
    shown = None if repair is None else (list(repair.argv), _how(repair), repair.output)
    answers = loop.answers(
        lambda n, rejected: apply_prompt(ctx.goal, plan_text, n, rejected, repair=shown),
        prepare=lambda: _quiet_and_clean(ctx, worktree, git_time),
    )
    for result in answers:
        problem = worktree_gitdir_problem(worktree.path, ctx.repo_path)
        if problem is not None:  # the agent rewrote .git (git would not read it): fail closed
            loop.records[-1]["status"] = "refused"
            return StepOutcome.failed(
                problem, {"rule": "worktree_gitdir", "attempts": loop.records}
            )
        with pinned(worktree) as folder:
            special = special_files_problem(folder)
        if special is not None:  # git would neither judge nor undo them
            error, paths = special
            loop.refuse(error)
            reset_worktree(worktree)
            return StepOutcome.failed(
                error, {"rule": SPECIAL_RULE, "paths": paths, "attempts": loop.records}
            )
        try:
            with git_time.measure():
                taken = _take_edits(ctx, worktree, result, policy, repair=repair is not None)
        except GitTimeout:  # fails the step under git_deadline; nothing judged stays
            _reset_after_deadline(worktree)
            raise
        if isinstance(taken, _Rejected):
            loop.reject(taken.reason)
            continue
        if isinstance(taken, _Refused):
            violations = taken.report.violations
            error = "the agent's change breaks the approved plan or the repository policy: " + (
                "; ".join(f"{v.rule}: {v.detail[:DETAIL_SHOWN]}" for v in violations)
            )
            loop.refuse(error)  # recorded first: a redelivery fails on it, never retries
            reset_worktree(worktree)  # nothing the plan did not allow stays on disk
            return StepOutcome.failed(
                error,
                {
                    **refusal_diagnostic(taken.report, taken.changes),
                    "policy": policy.to_json(),
                    "attempts": loop.records,
                },
            )
        diffstat = taken.patch.stat  # DecideST shows it the agent: read with the patch
        patch_sha = sha256_hex(taken.patch.diff)
        loop.records[-1].update(status="applied", patch_sha256=patch_sha)
        report = taken.report
        return StepOutcome(
            ok=True,
            output={
                "commit": taken.commit,
                "patch_sha256": patch_sha,
                "diffstat": diffstat,
                "summary": result.answer["summary"],
                "changes": [c.to_json() for c in taken.changes],
                "new_executables": list(report.executables),
                "planned_but_untouched": list(report.untouched),
                "lines": report.lines,
                "repair": repair.repair if repair is not None else 0,
                "attempts": loop.records,
                "git_ms": git_time.ms,
            },
            artifacts=[
                ArtifactOut(ArtifactKind.PATCH, "patch.diff", taken.patch.diff, "text/x-diff")
            ],
        )
    return loop.failure("usable edit", worktree=_undo(ctx, worktree))


def _repair_request(ctx: StepContext) -> RepairRequest | None:
    """A repair round is asked to fix the committed change (None: the first build)."""
    asked = effective_input(ctx.round_input)
    if asked is None or asked.get("kind") != RepairRequest.KIND:
        return None
    return RepairRequest.from_json(asked)


def _how(repair: RepairRequest) -> str:
    if repair.rule == RAN_NOTHING:
        return f"exited 0 but ran no test to a verdict ({RAN_NOTHING})"
    if repair.timed_out:
        return "timed out"
    return f"exited {repair.exit_code}" if repair.exit_code is not None else "failed"


def _undo(ctx: StepContext, worktree: Worktree) -> str:
    """A failed step leaves nothing of the agent's on disk, unless a call may still be
    editing (then it is left as it is, and the diagnostic says so)."""
    try:
        _quiet_and_clean(ctx, worktree)
    except WorktreeBusy as exc:
        return f"left as it is: {exc}"
    return "reset to HEAD"
