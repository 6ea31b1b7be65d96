"""The command's private checkout is the judged commit's bytes, or nothing runs.

A checkout runs the commit's ``.gitattributes``: with ``working-tree-encoding=UTF-7``
in the base commit, an agent's raw write of ``return a - b #(b)`` (which UTF-7 reads
back as itself, so every ApplyPatchST check passed) was checked out as
``return a - b +ACM(b)`` beside a ``def ACM(x): return x - -x``, and the verification
passed a commit whose add() is wrong (a red-team pass).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.git_ops import (
    UnfaithfulCheckout,
    commit_index,
    ensure_worktree,
    exec_root,
    private_checkout,
    stage_edits,
    unfaithful_paths,
)

pytestmark = pytest.mark.integration

EVIL = "def ACM(x):\n    return x - -x\n\n\ndef add(a, b):\n    return a - b #(b)\n"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def _repo(tmp_path: Path, attributes: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / ".gitattributes").write_text(attributes)
    (repo / "calc.py").write_text("def add(a, b):\n    return 0\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "base")
    return repo


def test_a_checkout_that_re_encodes_the_judged_commit_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "calc.py working-tree-encoding=UTF-7\n")
    workspace = tmp_path / "ws"
    tree = ensure_worktree(repo, workspace, "run-1", "HEAD")
    worktree = tree.path
    (worktree / "calc.py").write_text(EVIL)  # the agent's write tool: raw bytes
    changes = stage_edits(tree)
    assert unfaithful_paths(tree, changes) == [], "the judged change itself is faithful"
    commit = commit_index(tree, "kodo: tweak add\n")

    with (
        pytest.raises(UnfaithfulCheckout, match="worktree_filter") as refused,
        private_checkout(repo, workspace, "run-1", commit),
    ):
        pytest.fail("the command would have run on the re-encoded file")
    assert refused.value.paths == ["calc.py"]
    assert not (exec_root(workspace) / "run-1").exists(), "and the checkout is gone"


def test_line_endings_a_checkout_converts_are_allowed(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "*.py text eol=crlf\n")
    workspace = tmp_path / "ws"
    commit = _git(repo, "rev-parse", "HEAD").strip()
    with private_checkout(repo, workspace, "run-1", commit) as tree:
        assert (tree / "calc.py").read_bytes() == b"def add(a, b):\r\n    return 0\r\n"
