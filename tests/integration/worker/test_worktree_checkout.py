"""A run's worktree: registered under the repository's lock, checked out outside it.

Registering a worktree edits the repository's shared ``.git/worktrees`` and is
serialised per repository; writing its files is the worktree's own business. Held for
the checkout too, the lock let one run per repository check out at a time, however
many workers ran. A delivery that died between the two leaves a registered, empty
worktree: the next one writes it out.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest

from services.worker import git_ops
from services.worker.git_ops import ensure_worktree, lock_dir, private_checkout
from shared.hashing import sha256_hex

pytestmark = pytest.mark.integration


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    for i in range(20):
        (repo / "pkg" / f"m{i}.py").write_text(f"VALUE = {i}\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "base")
    return repo


@pytest.fixture
def lock_free_while_checking_out(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """For each checkout kodo runs: whether the repository's lock was free meanwhile
    (taken without waiting by another holder, as another worker's add would take it)."""
    seen: list[bool] = []
    real = git_ops.git
    lock = lock_dir(tmp_path / "ws") / f"{sha256_hex(str(repo.resolve()))[:16]}.lock"

    def spied(cwd: Path, *args: str, **kwargs: object) -> str:
        if args[:2] == ("reset", "--hard"):
            with lock.open("w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    seen.append(False)
                else:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    seen.append(True)
        return real(cwd, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(git_ops, "git", spied)
    return seen


def test_a_run_worktree_is_checked_out_with_the_repository_lock_free(
    repo: Path, tmp_path: Path, lock_free_while_checking_out: list[bool]
) -> None:
    worktree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert lock_free_while_checking_out == [True]
    assert (worktree.path / "pkg" / "m7.py").read_text() == "VALUE = 7\n"
    assert _git(worktree.path, "status", "--porcelain", "--ignored") == ""
    assert _git(worktree.path, "symbolic-ref", "HEAD").strip() == "refs/heads/kodo/run-1"


def test_a_private_checkout_is_written_with_the_repository_lock_free(
    repo: Path, tmp_path: Path, lock_free_while_checking_out: list[bool]
) -> None:
    commit = _git(repo, "rev-parse", "HEAD").strip()
    with private_checkout(repo, tmp_path / "ws", "run-1", commit) as tree:
        assert (tree / "pkg" / "m3.py").read_text() == "VALUE = 3\n"
        assert _git(tree, "status", "--porcelain", "--ignored") == ""
    assert lock_free_while_checking_out == [True]


def test_a_worktree_registered_but_never_checked_out_is_written_out_by_the_next_delivery(
    repo: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # what a delivery that died right after the registration leaves
    registered = str(workspace / "run-1")
    _git(repo, "worktree", "add", "-q", "--no-checkout", "-b", "kodo/run-1", registered)
    assert not (workspace / "run-1" / "pkg").exists()

    worktree = ensure_worktree(repo, workspace, "run-1", "HEAD")

    assert (worktree.path / "pkg" / "m0.py").read_text() == "VALUE = 0\n"
    assert _git(worktree.path, "status", "--porcelain", "--ignored") == ""


def test_a_checked_out_worktree_is_reused_without_a_git_process(
    repo: Path, tmp_path: Path, lock_free_while_checking_out: list[bool]
) -> None:
    first = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (first.path / "pkg" / "m1.py").write_text("VALUE = 'edited'\n")  # a later step's work

    again = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert again == first
    assert lock_free_while_checking_out == [True], "checked out once, by the first delivery"
    assert (first.path / "pkg" / "m1.py").read_text() == "VALUE = 'edited'\n"
