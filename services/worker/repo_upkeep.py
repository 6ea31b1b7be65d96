"""Packing what runs leave in a repository: git's own ``gc --auto``, which kodo's git
calls never trigger.

Every git call kodo makes sets ``gc.auto=0`` (shared.gitcmd): a gc started inside a step
would run for an unknown time under the repository's lock, or detach a process no one
waits for. But each run writes its commits, trees and blobs into the repository's object
store as loose files, and keeps its branch (a succeeded run's branch is its result), so
a repository only kodo writes to would pile up loose objects and refs for good: some
4 KiB of disk each, and git slowing on what enumerates them.

So once a run is cleaned, its repository gets the check git itself would have made:
``git gc --auto``, which does nothing until the loose objects pass ``gc.auto`` (6700
unless the repository's config says otherwise; ``gc.auto=0`` there turns it off) or the
packs pass ``gc.autoPackLimit``, and then packs the objects and the refs (unreachable
objects younger than two weeks stay whatever the config says: a run's ``git add``
writes objects nothing but its own index names until it commits). It runs in the
foreground, bounded (:data:`TIMEOUT_S`), hardened like every kodo git call, outside the
repository's lock (gc is safe beside other git commands), one at a time per worker
process and at most once per :data:`EVERY_S` per repository. A failure is logged and
never fails the cleanup: the next cleanup in that repository tries again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from shared.git_dir import git_dir_refusal
from shared.gitcmd import GitTimeout, run_git

log = structlog.get_logger("kodo.repo_upkeep")

GIT_DEFAULT_AUTO = "6700"
"""git's own ``gc.auto`` default: loose objects before ``gc --auto`` packs them."""
PRUNE_EXPIRE = "2.weeks.ago"
"""git's default grace for unreachable loose objects, kept whatever the repository says
(but ``never``)."""
EVERY_S = 600.0
"""The least time between two checks of one repository by one worker process."""
TIMEOUT_S = 1800.0
"""A first pack of a large repository takes minutes; past this it is killed (git leaves
only temporary files, which a later gc removes)."""

_checked: dict[str, float] = {}
_one_at_a_time = threading.Lock()
_checked_lock = threading.Lock()


def _due(repo: str, now: float) -> bool:
    with _checked_lock:
        last = _checked.get(repo)
        if last is not None and now - last < EVERY_S:
            return False
        _checked[repo] = now  # taken before the run: a second thread passes it by
        return True


def _own(repo: Path, key: str) -> str | None:
    # --local: the repository's own file (its includes too), not the overrides kodo sets
    said = run_git(repo, ["config", "--local", "--includes", "--get", key], timeout_s=30)
    value = said.stdout.decode(errors="replace").strip()
    return value if said.returncode == 0 and value else None


def gc_config(repo: Path) -> dict[str, str]:
    """The repository's own ``gc.auto`` (git's default when it sets none), and a grace
    for unreachable objects no shorter than git's default: a run's ``git add`` writes
    objects only its private index names until it commits, and a repository saying
    ``gc.pruneExpire=now`` would otherwise let this gc delete them under it."""
    prune = "never" if _own(repo, "gc.pruneExpire") == "never" else PRUNE_EXPIRE
    return {
        "gc.auto": _own(repo, "gc.auto") or GIT_DEFAULT_AUTO,
        "gc.autoDetach": "false",
        "gc.pruneExpire": prune,
    }


def pack_if_due(repo: Path, *, timeout_s: float = TIMEOUT_S) -> str:
    """``git gc --auto`` in ``repo`` under its own ``gc.auto``: what git said (empty when
    it had nothing to do, or packed quietly). Raises what run_git raises on a timeout,
    and RuntimeError for a git dir that is not the repository's own (gc's prune would
    delete through its links: shared.git_dir)."""
    why = git_dir_refusal(repo)
    if why is not None:
        raise RuntimeError(why)
    done = run_git(repo, ["gc", "--auto", "--quiet"], timeout_s=timeout_s, config=gc_config(repo))
    said = (done.stderr or done.stdout).decode(errors="replace").strip()
    if done.returncode != 0:
        raise RuntimeError(f"git gc --auto exited {done.returncode}: {said[:500]}")
    return said


def upkeep(
    repos: Iterable[str],
    *,
    clock: Callable[[], float] = time.monotonic,
    timeout_s: float = TIMEOUT_S,
) -> list[str]:
    """Check each repository not checked lately (this process); return those checked.

    Another thread of the process checking one already: this pass leaves it to that one.
    """
    if not _one_at_a_time.acquire(blocking=False):
        return []
    checked = []
    try:
        for repo in sorted(set(repos)):
            if not _due(repo, clock()):
                continue
            checked.append(repo)
            began = time.monotonic()
            try:
                said = pack_if_due(Path(repo), timeout_s=timeout_s)
            except (GitTimeout, RuntimeError, OSError) as exc:
                log.warning("repo_upkeep.failed", repo=repo, error=str(exc)[:500])
                continue
            took_ms = round((time.monotonic() - began) * 1000)
            log.info("repo_upkeep.checked", repo=repo, took_ms=took_ms, said=said[:200])
    finally:
        _one_at_a_time.release()
    return checked


def forget_checks() -> None:
    """Forget when repositories were checked (tests)."""
    with _checked_lock:
        _checked.clear()


def _after_fork_in_child() -> None:
    """A forked child (Celery's prefork pool) starts with free locks and no checks: a lock
    another thread held at the fork would otherwise stay held in the child for good."""
    global _one_at_a_time, _checked_lock
    _one_at_a_time = threading.Lock()
    _checked_lock = threading.Lock()
    _checked.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
