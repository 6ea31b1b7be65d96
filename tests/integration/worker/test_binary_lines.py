"""Lines of a file git calls binary are counted too: a shell runs a script git calls
binary for one NUL byte, every line of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import Worktree, ensure_worktree, stage_edits

pytestmark = pytest.mark.integration

SCRIPT = (
    b"#!/bin/sh\n# bash reads 80 bytes to call a file binary, git reads 8,000: \0\n"
    + b"".join(b"true %d\n" % i for i in range(5000))
    + b"echo HIDDEN-$((6*7))"  # a last line without its line feed
)


def _tree(tmp_path: Path) -> Worktree:
    repo = create_sample_repo(tmp_path / "calc")
    return ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def test_a_script_with_one_nul_runs_whole_and_counts_every_line(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree.path / "check.sh").write_bytes(SCRIPT)
    ran = subprocess.run(["sh", str(tree.path / "check.sh")], capture_output=True, check=False)
    assert b"HIDDEN-42" in ran.stdout  # the premise: what git calls binary, a shell runs

    [change] = stage_edits(tree)

    assert (change.path, change.added, change.removed) == ("check.sh", 5003, 0)


def test_a_binary_file_past_most_bytes_is_not_read_to_its_end(tmp_path: Path) -> None:
    """Its size refuses it (max_file_bytes) whatever its lines: counting them stops
    there, a chunk (1 MiB) past the bound at most."""
    tree = _tree(tmp_path)
    (tree.path / "blob.bin").write_bytes(b"\0" + b"\n" * (6 << 20))

    [whole] = stage_edits(tree)
    assert whole.added == 6 << 20
    [bounded] = stage_edits(tree, most_bytes=1 << 20)
    assert bounded.added is not None
    assert bounded.added <= 2 << 20


def test_a_file_git_calls_text_keeps_git_s_count(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree.path / "notes.md").write_bytes(b"one\ntwo\nthree\n")

    [change] = stage_edits(tree, most_bytes=1)

    assert (change.added, change.removed) == (3, 0)
