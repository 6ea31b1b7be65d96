"""patch.diff shows a change as its content is, whatever the repository's attributes say.

A repository (or the agent's own patch) may mark text files ``binary`` or ``-diff`` in
``.gitattributes``; git then writes their change as a base85 ``GIT binary patch`` that
no reviewer can read. kodo's patch artifact compares trees with the worktree's git dir
opened bare, where no ``.gitattributes`` is read.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    commit_index,
    committed_patch,
    ensure_worktree,
    git,
    stage_edits,
    staged_patch,
)
from shared.gitcmd import attribute_free, hardened_args

pytestmark = pytest.mark.integration


def _repo_marking_python_binary(tmp_path: Path) -> Path:
    repo = create_sample_repo(tmp_path / "calc")
    (repo / ".gitattributes").write_text("*.py binary\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "python is binary here")
    return repo


def test_a_text_file_the_attributes_call_binary_is_shown_as_text(tmp_path: Path) -> None:
    repo = _repo_marking_python_binary(tmp_path)
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "import os  # hidden?\n")
    (wt / "blob.bin").write_bytes(b"\x00\x01binary for real\n")
    stage_edits(wt)
    patch = staged_patch(wt)
    assert b"+import os  # hidden?\n" in patch
    assert b"GIT binary patch" in patch, "a file with a NUL byte stays a binary patch"
    assert patch.count(b"GIT binary patch") == 1
    # the agent's own attribute change is shown as text too, and judged by the same bytes
    commit_index(wt, "kodo: apply")
    assert committed_patch(wt) == patch


def test_the_attribute_free_patch_still_applies_to_the_base(tmp_path: Path) -> None:
    repo = _repo_marking_python_binary(tmp_path)
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "VALUE = 2\n")
    stage_edits(wt)
    patch = staged_patch(wt)
    check = subprocess.run(
        ["git", "apply", "--check", "-"], cwd=repo, input=patch, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_the_bare_view_needs_a_worktree_pointer_it_can_read(tmp_path: Path) -> None:
    (tmp_path / "not-a-worktree").mkdir()
    with pytest.raises(ValueError, match=r"not a worktree's \.git file"):
        attribute_free(tmp_path / "not-a-worktree")
    (tmp_path / "not-a-worktree" / ".git").write_text("nonsense\n")
    with pytest.raises(ValueError, match="does not name a git dir"):
        attribute_free(tmp_path / "not-a-worktree")


def test_global_options_stay_before_the_hardened_subcommand() -> None:
    assert hardened_args(["--bare", "--git-dir=/x", "diff", "A", "B"]) == [
        "--bare",
        "--git-dir=/x",
        "diff",
        "--no-ext-diff",
        "--no-textconv",
        "--ignore-submodules=dirty",
        "A",
        "B",
    ]
