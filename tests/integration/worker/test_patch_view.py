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
    GitError,
    Patch,
    PatchTooLarge,
    _patch,
    commit_diffstat,
    commit_index,
    committed_patch,
    ensure_worktree,
    git,
    split_stat,
    stage_edits,
    staged_patch,
)
from shared.domain.policy import MAX_PATCH_BYTES
from shared.gitcmd import hardened_args

pytestmark = pytest.mark.integration


def _repo_marking_python_binary(tmp_path: Path) -> Path:
    repo = create_sample_repo(tmp_path / "calc")
    (repo / ".gitattributes").write_text("*.py binary\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "python is binary here")
    return repo


def test_a_text_file_the_attributes_call_binary_is_shown_as_text(tmp_path: Path) -> None:
    repo = _repo_marking_python_binary(tmp_path)
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "import os  # hidden?\n")
    (wt / "blob.bin").write_bytes(b"\x00\x01binary for real\n")
    stage_edits(tree)
    patch = staged_patch(tree, max_bytes=MAX_PATCH_BYTES)
    assert b"+import os  # hidden?\n" in patch.diff
    assert b"GIT binary patch" in patch.diff, "a file with a NUL byte stays a binary patch"
    assert patch.diff.count(b"GIT binary patch") == 1
    # the agent's own attribute change is shown as text too, and judged by the same bytes
    commit_index(tree, "kodo: apply")
    assert committed_patch(tree, max_bytes=MAX_PATCH_BYTES) == patch, (
        "the same bytes and the same stat"
    )


def test_the_attribute_free_patch_still_applies_to_the_base(tmp_path: Path) -> None:
    repo = _repo_marking_python_binary(tmp_path)
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "VALUE = 2\n")
    stage_edits(tree)
    patch = staged_patch(tree, max_bytes=MAX_PATCH_BYTES)
    check = subprocess.run(
        ["git", "apply", "--check", "-"],
        cwd=repo,
        input=patch.diff,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


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


@pytest.mark.parametrize("revision", ["--output=OUT", "main", "HEAD^{tree}", "HEAD~2"])
def test_a_patch_is_taken_between_kodos_own_revisions_only(tmp_path: Path, revision: str) -> None:
    """HEAD, HEAD~1 or an object id go to git as they are; anything else (an option, a
    branch a repository could name like an id) is refused before git runs."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    out = tmp_path / "written-by-git"

    with pytest.raises(GitError, match="is not HEAD, HEAD~1 or an id"):
        _patch(tree, "HEAD", revision.replace("OUT", str(out)), max_bytes=MAX_PATCH_BYTES)
    assert not out.exists()


def test_the_stat_read_with_the_patch_is_what_git_diff_stat_says(tmp_path: Path) -> None:
    """One git process gives both; the stat DecideST shows is the plain ``--stat`` of the
    commit (a rename, a binary file and a name git quotes among the changes)."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / "README.md").rename(wt / "READ-ME.md")
    (wt / "blob.bin").write_bytes(b"\x00binary\n")
    (wt / "odd\nname.txt").write_text("quoted by git\n")
    stage_edits(tree)
    staged = staged_patch(tree, max_bytes=MAX_PATCH_BYTES)
    commit = commit_index(tree, "kodo: apply")

    assert staged.stat == commit_diffstat(tree, commit)
    assert '"odd\\nname.txt"' in staged.stat
    assert "READ-ME.md" in staged.stat
    assert staged.diff.startswith(b"diff --git ")
    assert committed_patch(tree, max_bytes=MAX_PATCH_BYTES) == staged


def test_a_patch_one_byte_over_its_bound_is_refused_and_at_it_is_whole(tmp_path: Path) -> None:
    """The bound is on what git shows (stat, blank line, patch), read as git writes it:
    a change of one 300 kB line is one line for ``max_lines``, and its bytes are what
    ``max_patch_bytes`` bounds."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "long.txt").write_bytes(b"x" * 300_000 + b"\n")
    stage_edits(tree)
    whole = staged_patch(tree, max_bytes=MAX_PATCH_BYTES)
    shown = len(whole.stat.encode()) + 1 + len(whole.diff)
    assert shown > 300_000

    assert staged_patch(tree, max_bytes=shown) == whole
    with pytest.raises(PatchTooLarge, match=f"over {shown - 1} bytes"):
        staged_patch(tree, max_bytes=shown - 1)


def test_a_stat_and_its_patch_are_split_where_git_puts_the_blank_line() -> None:
    shown = b' a | 1 +\n "b\\nc" | 1 +\n 2 files changed\n\ndiff --git a/a b/a\n+x\n'

    patch = split_stat(shown)

    assert patch.stat == ' a | 1 +\n "b\\nc" | 1 +\n 2 files changed\n'
    assert patch.diff == b"diff --git a/a b/a\n+x\n"
    assert split_stat(b"") == Patch(b"", "")


@pytest.mark.parametrize(
    "shown",
    [b"diff --git a/a b/a\n+x\n", b" a | 1 +\n 1 file changed\n", b"x\n\ndiff --git a/a b/a\n"],
)
def test_output_that_is_not_a_stat_then_a_patch_is_refused(shown: bytes) -> None:
    with pytest.raises(GitError, match="no stat, then patch"):
        split_stat(shown)
