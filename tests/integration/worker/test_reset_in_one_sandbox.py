"""A worktree reset is one sandbox: git's checkout of HEAD and its clean run together.

A pinned git's sandbox (bubblewrap: namespaces, a root of binds) costs more CPU than
the git it holds, and every ApplyPatchST attempt starts with a reset. The checkout and
the clean now share one (``sh -c``, the clean only once the checkout succeeded), and
the reset still leaves exactly HEAD's tree: edits, new files, ignored files and nested
repositories gone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker import git_ops
from services.worker.git_ops import Worktree, ensure_worktree, reset_worktree, tree_git

pytestmark = pytest.mark.integration


@pytest.fixture
def tree(tmp_path: Path) -> Worktree:
    repo = create_sample_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("*.log\n")
    subprocess.run(["git", "-C", str(repo), "add", ".gitignore"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"],
        check=True,
    )
    return ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def _sandboxes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The programs kodo's pinned git starts from now on (bwrap, one per sandbox)."""
    started: list[str] = []
    real = git_ops.run_apart

    def counting(argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
        started.append(Path(argv[0]).name)
        return real(argv, **options)

    monkeypatch.setattr(git_ops, "run_apart", counting)
    return started


def test_a_reset_leaves_heads_tree_in_one_sandbox(
    tree: Worktree, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = tree_git(tree, "ls-files").split()
    (tree.path / "calc.py").write_text("print('an agent was here')\n")
    (tree.path / "new.py").write_text("x = 1\n")
    (tree.path / "debug.log").write_text("ignored, and still dropped\n")
    nested = tree.path / "vendor" / "inner"
    nested.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(nested)], check=True)
    started = _sandboxes(monkeypatch)

    reset_worktree(tree)

    assert started == ["bwrap"], "the checkout and the clean share one sandbox"
    files = (str(p.relative_to(tree.path)) for p in tree.path.rglob("*") if p.is_file())
    on_disk = sorted(f for f in files if f != ".git")  # (the worktree's pointer)
    assert on_disk == sorted(head), "exactly HEAD's files"
    assert "an agent was here" not in (tree.path / "calc.py").read_text()
    assert tree_git(tree, "status", "--porcelain") == "", "and git agrees"


def test_a_reset_with_the_sandbox_off_does_the_same_in_two_git_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-off", "HEAD", bwrap=None)
    (tree.path / "calc.py").write_text("changed\n")
    (tree.path / "new.py").write_text("x = 1\n")
    started = _sandboxes(monkeypatch)

    reset_worktree(tree)

    assert "bwrap" not in started
    assert not (tree.path / "new.py").exists()
    assert "changed" not in (tree.path / "calc.py").read_text()
