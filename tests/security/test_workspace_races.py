"""Another run's agent races kodo in the workspaces folder, which the daemon may write.

Each attack runs in a process of its own, swapping names with ``renameat2(RENAME_EXCHANGE)``
(atomic: the name is always there, one file or the other) for as long as kodo works. The
swaps are scripted after a red-team pass, which won each of them on the code before.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    GitError,
    commit_index,
    ensure_worktree,
    reset_worktree,
    stage_edits,
)
from services.worker.worktree_guard import worktree_gitdir_problem
from shared.hashing import git_blob_digest

pytestmark = pytest.mark.security

_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange_forever(a: str, b: str) -> None:
    while True:
        _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)


@contextmanager
def racing(attack: Callable[..., None], *args: str) -> Iterator[None]:
    """``attack(*args)`` in another process (the other run's agent) while the block runs;
    stopped when it ends, whether or not it acted."""
    racer = multiprocessing.get_context("fork").Process(target=attack, args=args, daemon=True)
    racer.start()
    time.sleep(0.2)  # its watch is set before kodo starts
    try:
        yield
    finally:
        racer.kill()
        racer.join()


def swapping(a: Path, b: Path) -> AbstractContextManager[None]:
    """``a`` and ``b`` exchanged without pause by another process until the block ends."""
    return racing(_exchange_forever, str(a), str(b))


def test_a_fifo_swapped_in_for_the_pointer_never_holds_the_check(tmp_path: Path) -> None:
    """Every step checks the worktree's ``.git`` pointer. Checked by name (is it a file?
    then read it), a FIFO swapped in between made the read wait for a writer forever
    (the worker's thread gone for good; 10 checks in on the code before)."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "victim", "HEAD")
    os.mkfifo(tree.path / "f")
    verdicts: list[str | None] = []

    def check() -> None:
        for _ in range(3000):
            verdicts.append(worktree_gitdir_problem(tree.path, repo))

    with swapping(tree.path / ".git", tree.path / "f"):
        checking = threading.Thread(target=check, daemon=True)
        checking.start()
        checking.join(timeout=60)

    assert not checking.is_alive(), f"a check hung on the FIFO after {len(verdicts)} checks"
    assert len(verdicts) == 3000
    refused = [v for v in verdicts if v is not None]
    assert all(v.startswith("worktree_gitdir:") for v in refused)


def _swap_when_git_starts(folder: str, link: str) -> None:
    """Wait until git starts emptying ``folder/big``, then put ``link`` in its place."""
    began = os.stat(f"{folder}/big").st_mtime_ns
    while os.stat(f"{folder}/big").st_mtime_ns == began:
        pass
    _LIBC.renameat2(_AT_FDCWD, os.fsencode(folder), _AT_FDCWD, os.fsencode(link), _RENAME_EXCHANGE)


def test_a_folder_swapped_for_a_link_while_git_cleans_it_leads_nowhere(tmp_path: Path) -> None:
    """kodo's ``git clean`` (before every build attempt) empties a folder by name, entry
    after entry. Another run's agent fills ``junk/s`` with a large folder and names it
    wants deleted, and once git is busy in the large folder swaps ``junk/s`` for a link
    to its target: every later unlink went through the link, as root, with the host
    bound writable (10 of 100 files outside the workspaces deleted, 5 runs of 5)."""
    repo = create_sample_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    names = [f"keep_{i:03d}" for i in range(100)]
    for name in names:
        (outside / name).write_text("precious\n")
    tree = ensure_worktree(repo, tmp_path / "ws", "victim", "HEAD")
    swapped = tree.path / "junk" / "s"
    (swapped / "big").mkdir(parents=True)
    for i in range(30000):
        (swapped / "big" / f"a{i:05d}").touch()
    for name in names:
        (swapped / name).touch()
    (tmp_path / "ws" / "attacker").mkdir()
    link = tmp_path / "ws" / "attacker" / "l"  # kept out of the folder git cleans
    link.symlink_to(outside)
    with racing(_swap_when_git_starts, str(swapped), str(link)), suppress(GitError):
        reset_worktree(tree)  # refusing to clean through the link is fine

    assert sorted(p.name for p in outside.iterdir()) == names


_IN_DELETE = 0x200


def _swap_on_first_delete(folder: str, link: str) -> None:
    """Block until something in ``folder`` is deleted (git rewriting it), then put
    ``link`` in the folder's place: what an agent watching with inotify can do."""
    watch = _LIBC.inotify_init1(0)
    _LIBC.inotify_add_watch(watch, os.fsencode(folder), _IN_DELETE)
    os.read(watch, 4096)
    _LIBC.renameat2(_AT_FDCWD, os.fsencode(folder), _AT_FDCWD, os.fsencode(link), _RENAME_EXCHANGE)


def test_a_folder_swapped_while_git_restores_it_cannot_rewrite_the_runs_git_dir(
    tmp_path: Path,
) -> None:
    """Restoring the tracked files (before every build attempt) rewrites them by name. The
    judged commit holds ``d/commondir`` naming a repository of the agent's; once git is
    busy in ``d``, ``d`` becomes a link to the run's git dir, and git's rewrite of
    ``d/commondir`` landed in it: kodo's next git of the run read the agent's refs and
    config, and wrote objects through its links (5 of 5 on the code before)."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "victim", "HEAD")
    d = tree.path / "d"
    d.mkdir()
    for i in range(2000):
        (d / f"a{i:05d}").write_text("x\n")
    (d / "commondir").write_text(f"{ws / 'fake'}\n")
    stage_edits(tree)
    commit_index(tree, "judged")
    for i in range(2000):
        (d / f"a{i:05d}").write_text("y\n")
    (d / "commondir").write_text("edited\n")
    (ws / "attacker").mkdir()
    link = ws / "attacker" / "l"
    link.symlink_to(tree.gitdir)
    with racing(_swap_on_first_delete, str(d), str(link)), suppress(GitError):
        reset_worktree(tree)  # refusing to write through the link is fine

    assert (tree.gitdir / "commondir").read_text() == "../..\n"
    assert (tree.gitdir / "gitdir").is_file()
    assert (tree.gitdir / "locked").is_file()


def test_a_git_dir_naming_another_repository_is_refused(tmp_path: Path) -> None:
    """Whatever rewrote it, a run's git dir whose ``commondir`` is not the repository's own
    is no git dir kodo runs git in."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "victim", "HEAD")
    (tree.gitdir / "commondir").write_text(f"{tmp_path / 'fake'}\n")

    problem = worktree_gitdir_problem(tree.path, repo)

    assert problem is not None
    assert "names another repository" in problem


_IN_OPEN = 0x20


def _swap_once_git_hashes(folder: str, first: str, link: str) -> None:
    """Block until git opens ``folder/first`` to hash it, then put ``link`` in the
    folder's place: every later name git opens in it goes through the link."""
    watch = _LIBC.inotify_init1(0)
    _LIBC.inotify_add_watch(watch, os.fsencode(folder), _IN_OPEN)
    wanted = os.fsencode(first)
    while wanted not in os.read(watch, 65536):
        pass
    _LIBC.renameat2(_AT_FDCWD, os.fsencode(folder), _AT_FDCWD, os.fsencode(link), _RENAME_EXCHANGE)


def test_a_folder_swapped_for_a_link_while_git_stages_it_reads_nothing_outside(
    tmp_path: Path,
) -> None:
    """kodo's ``git add`` opens each new file by name. Another run's agent puts a large
    file first in ``d`` and ``d/secret`` after it, and once git is busy hashing the large
    one swaps ``d`` for a link to a folder outside holding a root-only ``secret``: root git
    staged the outside file, writing it into the repository's objects (5 of 5 on the
    code before; the judgement refused it, but its blob id and line count went into the
    refused step's record)."""
    repo = create_sample_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"root-only: hunter2\n")
    secret.chmod(0o600)
    leaked = git_blob_digest(secret.stat().st_size, 40)
    leaked.update(secret.read_bytes())
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "victim", "HEAD")
    d = tree.path / "d"
    d.mkdir()
    with (d / "0big").open("wb") as big:
        big.write(os.urandom(1 << 20) * 96)
    (d / "secret").write_text("mine\n")
    (ws / "attacker").mkdir()
    link = ws / "attacker" / "l"
    link.symlink_to(outside)

    with racing(_swap_once_git_hashes, str(d), "0big", str(link)), suppress(GitError):
        stage_edits(tree)  # refusing to stage through the link is fine

    assert (tree.path / "d").is_symlink(), "the attack did not run: no swap"
    stored = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", leaked.hexdigest()], check=False
    )
    assert stored.returncode != 0, "the file outside the worktree was read into the repository"
