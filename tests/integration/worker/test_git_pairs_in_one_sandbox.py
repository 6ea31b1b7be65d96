"""Two git commands that always go together share one sandbox.

A pinned git's sandbox (bubblewrap: namespaces, a root of binds) costs more CPU than
the git it holds. A worktree reset (every ApplyPatchST attempt starts with one) runs
git's checkout of HEAD and its clean in one (``sh -c``, the clean only once the
checkout succeeded) and still leaves exactly HEAD's tree: edits, new files, ignored
files and nested repositories gone. A commit reads its own id back in its sandbox; its
message, which holds the intent's words and the agent's summary, travels on stdin and
never reaches the shell's command line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker import git_ops
from services.worker.git_ops import (
    Worktree,
    commit_index,
    ensure_worktree,
    reset_worktree,
    stage_edits,
    tree_git,
)
from shared import gitcmd

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
    """The programs kodo's git starts from now on: ``bwrap`` for a pinned git (one per
    sandbox), ``git`` for an unpinned one."""
    started: list[str] = []
    for module in (git_ops, gitcmd):
        real = module.run_apart

        def counting(
            argv: Sequence[str], _real: Any = real, **options: Any
        ) -> subprocess.CompletedProcess[bytes]:
            started.append(Path(argv[0]).name)
            return _real(argv, **options)  # type: ignore[no-any-return]

        monkeypatch.setattr(module, "run_apart", counting)
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


def test_a_commit_reads_its_id_back_in_its_own_sandbox(
    tree: Worktree, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tree.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    stage_edits(tree)
    started = _sandboxes(monkeypatch)

    commit = commit_index(tree, "kodo: one commit")

    assert started == ["bwrap"], "the commit and its id in one sandbox, no other git"
    assert commit == tree_git(tree, "rev-parse", "HEAD").strip()


def test_a_hostile_commit_message_is_kept_verbatim_and_runs_nothing(
    tree: Worktree, tmp_path: Path
) -> None:
    planted = tmp_path / "pwned"
    message = (
        f"kodo: $(touch {planted}) `touch {planted}`; touch {planted} && echo 'it'\"s\"\n"
        f"\n|| touch {planted} # > {planted}\n"
    )
    (tree.path / "calc.py").write_text("x = 1\n")
    stage_edits(tree)

    commit = commit_index(tree, message)

    assert not planted.exists()
    body = tree_git(tree, "log", "-1", "--format=%B", commit)
    assert body.rstrip("\n") == message.rstrip("\n")


def test_only_kodos_constant_arguments_reach_the_shell() -> None:
    with pytest.raises(ValueError, match="not kodo's own constant arguments"):
        git_ops._commands("bwrap", "/usr/bin/git", ("commit", "-m", "a; b"), ("status",))
    assert git_ops._commands("bwrap", "/usr/bin/git", ("status",), None) == [
        "/usr/bin/git",
        "status",
        "--ignore-submodules=dirty",
    ]
