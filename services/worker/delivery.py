"""Delivery and cleanup, the git side: push a succeeded run's branch to its repository's
delivery remote, and remove finished runs' worktrees (and the branches of runs that
produced nothing to keep) once their grace period is over.

Both run from the reconciler's pass (so a lost message or a failed push is tried again
from the rows alone); delivery is also sent right after a run succeeds. git runs
hardened (shared.gitcmd), allowing only the protocols the operator lists.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

import structlog

from services.worker.git_ops import (
    GitError,
    confined_git_dir,
    drop_private_checkout,
    drop_run_leftovers,
    exec_root,
    forget_registration,
    git,
    remove_worktree_dir,
    repo_lock,
    run_branch,
)
from services.worker.repo_upkeep import upkeep
from services.worker.runtime import Runtime
from services.worker.worktree_guard import shown_path
from shared.db.engine import unit_of_work
from shared.domain.run_machine import RunStatus
from shared.git_dir import alternates_refusal, foreign_entry
from shared.gitcmd import config_names, lazy_fetch_keys, run_git, transport_keys
from shared.real_path import resolved
from shared.service.delivery import (
    Cleanup,
    Delivery,
    due_cleanups,
    due_deliveries,
    record_cleanup,
    record_cleanup_failure,
    record_delivery,
)

log = structlog.get_logger("kodo.delivery")

PUSH_TIMEOUT_S = 120
DISPOSABLE = frozenset({RunStatus.REJECTED, RunStatus.CANCELLED, RunStatus.FAILED})
"""Runs whose branch holds nothing anyone asked to keep (removed unless KODO_KEEP_BRANCHES)."""


HOOKLESS_RECEIVE_PACK = (
    "git -c core.hooksPath=/dev/null -c core.alternateRefsCommand="
    " -c core.fsmonitor=false -c receive.autogc=false -c gc.auto=0"
    " -c receive.denyCurrentBranch=refuse -c core.bare=true"
    " -c protocol.allow=never -c protocol.file.allow=never receive-pack"
)
"""What a push to a repository on this machine runs there. git runs a local remote's
receive-pack itself, as the worker, without kodo's hardening (git drops the command's
config for a local transport): the remote's hooks ran as kodo, a way round "git never
runs a repository's code". Nor does its config name a program run there
(``core.alternateRefsCommand``, red-team helper-105) or start a ``gc``, nor fetch: a
target that lacks a thin pack's base and names a promisor remote fetched it lazily,
running its own ``uploadpack`` (red-team helper-111). A remote
elsewhere runs its hooks on its own machine."""


def is_local_url(url: str) -> bool:
    """Whether git reaches ``url`` on this machine (a path, or ``file://``), not over a
    network (``scheme://`` or scp-like ``host:path``)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    return ":" not in url.split("/", 1)[0]


def deliver(rt: Runtime, run_id: str | None = None) -> list[str]:
    """Push the branch of each succeeded, undelivered run (or just ``run_id``); return the
    runs delivered. Nothing to do when no delivery remote is configured."""
    remote = rt.settings.deliver_remote
    if not remote:
        return []
    with unit_of_work(rt.sessions) as s:
        due = due_deliveries(s, run_id=run_id)
    delivered = []
    for item in due:
        try:
            sha, error = _push(rt, item, remote)
        except Exception as exc:  # a hung remote (GitTimeout), a repository moved away:
            # recorded as a failed attempt, so it is tried a bounded number of times and
            # never stops the other runs' deliveries or the rest of the reconciler's pass
            log.warning("delivery.push_crashed", run_id=item.run_id, error=str(exc)[:500])
            sha, error = None, f"{type(exc).__name__}: {str(exc)[:1000]}"
        with unit_of_work(rt.sessions) as s:
            record_delivery(s, item.run_id, sha=sha, error=error)
        if sha is not None:
            delivered.append(item.run_id)
            log.info("delivery.pushed", run_id=item.run_id, remote=remote, sha=sha)
        else:
            log.warning("delivery.failed", run_id=item.run_id, remote=remote, error=error)
    return delivered


def _push(rt: Runtime, item: Delivery, remote: str) -> tuple[str | None, str | None]:
    """(the sha the remote's branch now has, None) or (None, why the push failed)."""
    repo = Path(item.repo_path)
    ref = f"refs/heads/{item.branch}"
    allowed = {f"protocol.{p}.allow": "always" for p in rt.settings.deliver_protocols}
    if item.commit is None:
        return None, "no judged commit is recorded for the run: nothing verified to deliver"
    try:
        sha = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    except GitError as exc:
        return None, f"the branch {item.branch} is gone from {repo}: {exc}"
    if sha != item.commit:  # only what was judged against the plan and verified leaves
        return None, (
            f"the branch {item.branch} is at {sha}, not at the commit the run judged and"
            f" verified ({item.commit}): refusing to deliver it"
        )
    # every push URL, rewritten as git push rewrites them
    listed = _run_git_text(repo, ["remote", "get-url", "--push", "--all", remote])
    urls = [u for u in (listed or "").splitlines() if u.strip()]
    refused = _refused_target(rt, repo, remote, urls)
    if refused is not None:
        return None, refused
    url = urls[0]
    hookless = [f"--receive-pack={HOOKLESS_RECEIVE_PACK}"] if is_local_url(url) else []
    pushed = _push_from_scratch(
        repo, ["push", "--porcelain", *hookless, "--", url, f"{sha}:{ref}"], allowed
    )
    if pushed.returncode != 0:
        said = (pushed.stderr or pushed.stdout).decode(errors="replace").strip()
        return None, f"git push {remote} {item.branch}: {said}"
    return sha, None


def _push_from_scratch(
    repo: Path, args: list[str], config: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """``git push`` run from a scratch bare repository of kodo's own, which borrows the
    source repository's objects (``alternates``) and holds no config: the URL checked
    is the one pushed to. From the source repository git read the owner's config again:
    a remote named like the URL, an ``insteadOf`` or ``pushInsteadOf`` rewriting it
    once more sent the branch elsewhere, a network URL turned into a local path
    (red-team helpers 105, 107)."""
    objects = resolved(repo / ".git" / "objects")
    with tempfile.TemporaryDirectory(prefix="kodo-push-") as scratch:
        made = run_git(Path(scratch), ["init", "-q", "--bare", scratch], timeout_s=30)
        if made.returncode != 0:
            return made
        alternates = Path(scratch) / "objects" / "info" / "alternates"
        alternates.write_text(f"{objects}\n", encoding="utf-8")
        return run_git(Path(scratch), args, timeout_s=PUSH_TIMEOUT_S, config=config)


DELIVERY_TARGET_RULE = "delivery_target"


def _refused_target(rt: Runtime, repo: Path, remote: str, urls: list[str]) -> str | None:
    """Why kodo must not push to ``remote``'s URLs, naming DELIVERY_TARGET_RULE, or None.

    The URLs are the source repository's own config. ``git push`` pushes to every push
    URL, and kodo made only the first one's receive-pack hookless: a network URL first
    and a path second ran the second repository's hooks as the worker (red-team
    helper-104), so a remote with more than one is refused. A path (or ``file://``) must
    lie under KODO_REPO_ROOTS: any repository kodo's user can write, another tenant's
    included, otherwise received a ``kodo/<run>`` branch."""
    if not urls:  # git push would take the name for a path (<repo>/<name>)
        return f"{DELIVERY_TARGET_RULE}: the repository has no remote {shown_path(remote)}"
    if len(urls) > 1:
        shown = ", ".join(shown_path(u) for u in urls[:5])
        return (
            f"{DELIVERY_TARGET_RULE}: {shown_path(remote)} has {len(urls)} push URLs ({shown}):"
            " kodo pushes to exactly one"
        )
    url = urls[0]
    if not is_local_url(url):
        return None
    path = _file_url_path(url) if url.startswith("file://") else url
    if path.startswith("~"):
        return f"{DELIVERY_TARGET_RULE}: {shown_path(url)} names a home folder, not a root's"
    target = resolved(repo / path)  # (an absolute path stays itself)
    roots = rt.settings.repo_roots
    if not any(target == root or target.is_relative_to(root) for root in roots):
        return f"{DELIVERY_TARGET_RULE}: {shown_path(url)} is outside KODO_REPO_ROOTS"
    return _refused_bare(target, url, roots)


def _refused_bare(target: Path, url: str, roots: Sequence[Path]) -> str | None:
    """A local target must be a bare repository whose folder holds nothing but plain files
    and folders of its own file system: a ``.git`` file there named another repository
    (outside the roots), a link in it took the branch elsewhere, and a work tree let
    ``receive.denyCurrentBranch=updateInstead`` check the agent's files out, through
    the target's filters, as the worker (red-team helper-107)."""
    shown = shown_path(url)
    if not _git_takes(target):
        return f"{DELIVERY_TARGET_RULE}: {shown} is not a bare repository"
    if (target / ".git").exists() or (target / ".git").is_symlink():
        return f"{DELIVERY_TARGET_RULE}: {shown} is not a bare repository (it has a .git)"
    # git tries <path>/.git, <path>, <path>.git/.git and <path>.git, in that order, and
    # takes the first that is a repository: a <path> it would not take sent the push on
    # to a <path>.git/.git naming another (red-team helper-117)
    sibling = target.with_name(target.name + ".git")
    if sibling.exists() or sibling.is_symlink():
        return f"{DELIVERY_TARGET_RULE}: {shown} has a sibling {sibling.name} git may take"
    if (target / "commondir").exists() or (target / "commondir").is_symlink():
        return f"{DELIVERY_TARGET_RULE}: {shown}/commondir makes git take another folder"
    records = target / "worktrees"
    if records.is_dir() and any(records.iterdir()):
        return f"{DELIVERY_TARGET_RULE}: {shown} has worktrees a push would check out"
    found = foreign_entry(target)
    if found is not None:
        return f"{DELIVERY_TARGET_RULE}: {shown}: {found}"
    # git runs the target's receive-pack under the target's own config, not kodo's: one
    # that fetches lazily (a thin pack's missing base) through a transport it allows
    # itself ran its command as the worker (red-team helpers 111, 114)
    borrowed = alternates_refusal(target, roots)  # its receive-pack reads those stores
    if borrowed is not None:
        return f"{DELIVERY_TARGET_RULE}: {shown}: {borrowed}"
    names = config_names(target, timeout_s=30)
    risky = lazy_fetch_keys(names) + transport_keys(names)
    if risky:
        return (
            f"{DELIVERY_TARGET_RULE}: {shown}'s config sets {risky[0]}: receiving a push,"
            " it could fetch objects itself, through a transport it allows"
        )
    return None


_HEAD_REF = re.compile(rb"ref: refs/[^\s]+\n?|[0-9a-f]{40}\n?|[0-9a-f]{64}\n?")


def _git_takes(folder: Path) -> bool:
    """Whether git takes ``folder`` itself for a repository (``is_git_directory``): a
    ``HEAD`` that is a plain file naming a ref under ``refs/`` or an object, and the
    ``objects`` and ``refs`` folders."""
    head = folder / "HEAD"
    if head.is_symlink() or not head.is_file():
        return False
    try:
        with head.open("rb") as handle:
            said = handle.read(512)
    except OSError:
        return False
    return (
        _HEAD_REF.fullmatch(said) is not None
        and (folder / "objects").is_dir()
        and (folder / "refs").is_dir()
    )


def _file_url_path(url: str) -> str:
    """The path git reads in a ``file://`` URL: all of it after the host, percent-decoded
    (``#`` and ``?`` are part of the path to git, which urlsplit drops: red-team
    helper-105)."""
    rest = url.removeprefix("file://")
    if not rest.startswith("/"):
        rest = "/" + rest.partition("/")[2]  # file://host/path
    return unquote(rest)


def _run_git_text(repo: Path, args: list[str]) -> str | None:
    """git's output, or None if it failed."""
    done = run_git(repo, args, timeout_s=30)
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def clean(rt: Runtime) -> list[str]:
    """Remove the worktrees of runs finished longer than KODO_WORKTREE_GRACE_S ago, and
    the branches of rejected, cancelled and failed ones (unless KODO_KEEP_BRANCHES);
    return the runs cleaned."""
    settings = rt.settings
    with unit_of_work(rt.sessions) as s:
        due = due_cleanups(s, now=rt.clock.now(), grace_s=settings.worktree_grace_s)
    cleaned = []
    for item in due:
        try:
            branch_removed = _remove(rt, item)
        except Exception as exc:  # one run's leftovers must not stop any other's cleanup
            if isinstance(exc, GitError):
                log.warning("cleanup.failed", run_id=item.run_id, error=str(exc))
            else:
                log.exception("cleanup.crashed", run_id=item.run_id)
            with unit_of_work(rt.sessions) as s:
                error = f"{type(exc).__name__}: {exc}"
                record_cleanup_failure(s, item.run_id, now=rt.clock.now(), error=error)
            continue
        with unit_of_work(rt.sessions) as s:
            record_cleanup(s, item.run_id, branch_removed=branch_removed)
        cleaned.append(item.run_id)
        log.info("cleanup.done", run_id=item.run_id, branch_removed=branch_removed)
    upkeep(item.repo_path for item in due)  # what the runs wrote, packed when git would
    return cleaned


def _remove(rt: Runtime, item: Cleanup) -> bool:
    """Remove the run's worktree (and its branch, if disposable): whether the branch went.

    The folders are the run's own and go first, outside the repository's lock (as a
    private checkout's do): removing a large worktree takes seconds, and under the lock
    it held up every run on the repository that was making its worktree meanwhile. The
    lock covers what edits the repository's shared records: the prune, the branch.
    """
    repo = Path(item.repo_path)
    workspaces = rt.settings.workspace_dir
    # No branch named: the run ended before CompileST recorded its outcome (its first
    # call's claim named the worktree): the branch CompileST makes.
    branch = item.branch or run_branch(item.run_id)
    if item.worktree_path is not None:
        remove_worktree_dir(Path(item.worktree_path), workspaces)
    private = exec_root(workspaces)  # a crashed command's checkout
    drop_private_checkout(repo, workspaces, private / item.run_id)
    drop_run_leftovers(workspaces, item.run_id)  # killed deliveries'
    with repo_lock(workspaces, repo):
        # the records and the branch go through its git dir: checked once (the walk is
        # forget_registration's own when there is a registration to forget)
        if item.worktree_path is not None:  # kodo registered it locked (git_ops)
            forget_registration(repo, Path(item.worktree_path))
        else:
            confined_git_dir(repo)
        drop = RunStatus(item.status) in DISPOSABLE and not rt.settings.keep_branches
        if drop:
            present = git(repo, "branch", "--list", branch).strip()
            if present:
                git(repo, "branch", "-D", branch)
        return drop
