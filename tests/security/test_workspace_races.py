"""Another run's agent races kodo in the workspaces folder, which the daemon may write.

Each attack runs in a process of its own, swapping names with ``renameat2(RENAME_EXCHANGE)``
(atomic: the name is always there, one file or the other) for as long as kodo works. The
swaps are scripted after a red-team pass, which won each of them on the code before.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import GitError, ensure_worktree, reset_worktree
from services.worker.worktree_guard import worktree_gitdir_problem

pytestmark = pytest.mark.security

_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange_forever(a: str, b: str) -> None:
    while True:
        _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)


@contextmanager
def swapping(a: Path, b: Path) -> Iterator[None]:
    """``a`` and ``b`` exchanged without pause by another process until the block ends."""
    racer = multiprocessing.get_context("fork").Process(
        target=_exchange_forever, args=(str(a), str(b)), daemon=True
    )
    racer.start()
    try:
        yield
    finally:
        racer.kill()
        racer.join()


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
    racer = multiprocessing.get_context("fork").Process(
        target=_swap_when_git_starts, args=(str(swapped), str(link)), daemon=True
    )
    racer.start()
    try:
        reset_worktree(tree)
    except GitError:
        pass  # refusing to clean through the link is fine; deleting through it is not
    finally:
        racer.join(timeout=10)
        racer.kill()

    assert sorted(p.name for p in outside.iterdir()) == names
