"""``max_lines`` counts the lines a reader of the file sees, not only git's LFs.

A lone carriage return ends a line for Python but not for git's numstat: 5,000
statements joined by CRs were one line against a 2,000-line limit, and all of them ran.
(Found by a red-team pass.)
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker import git_ops
from services.worker.git_ops import GitError, ensure_worktree, lone_carriage_returns, stage_edits
from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security


def test_statements_joined_by_lone_carriage_returns_count_against_max_lines(
    hostile: Hostile,
) -> None:
    body = "\r".join(f"x{i} = {i}" for i in range(5000)) + "\rprint('RAN-' + 'CR')\n"
    fixture = hostile.fixture(
        "cr-lines",
        plan=attacks.plan(("big.py", "add")),
        patch=attacks.patch(
            "diff --git a/big.py b/big.py\nnew file mode 100644\n--- /dev/null\n+++ b/big.py\n"
            f"@@ -0,0 +1 @@\n+{body}"
        ),
        build=attacks.build("python3", "big.py"),
    )

    outcome = hostile.drive(hostile.repo("cr-lines"), fixture)

    assert_fails_closed(outcome, "max_lines")
    assert "RAN-CR" not in outcome.command_output()


@pytest.mark.parametrize(
    ("content", "lone"),
    [(b"a\rb\r\nc\n", 1), (b"\r" * 3, 3), (b"a\r\nb\r\n", 0), (b"x" * ((1 << 20) - 1), 0)],
    ids=["mixed", "only-crs", "crlf", "a-chunk-of-text"],
)
def test_lone_carriage_returns_are_counted_and_crlf_is_not(
    tmp_path: Path, content: bytes, lone: int
) -> None:
    assert _counted(tmp_path, content) == lone


def test_a_crlf_split_across_read_chunks_is_one_line_break(tmp_path: Path) -> None:
    content = b"x" * ((1 << 20) - 1) + b"\r\n" + b"\r"  # CR ends chunk one
    assert _counted(tmp_path, content) == 1


def test_several_blobs_are_counted_in_one_stream_each_by_its_own(tmp_path: Path) -> None:
    tree = ensure_worktree(create_sample_repo(tmp_path / "repo"), tmp_path / "ws", "run-1", "HEAD")
    blobs = [_blob(tree.path, content) for content in (b"a\rb\r", b"", b"\r\n" * 5, b"\r")]
    assert lone_carriage_returns(tree, [*blobs, blobs[0]]) == dict(
        zip(blobs, (2, 0, 0, 1), strict=True)
    )


def test_the_count_is_the_staged_blobs_whatever_the_file_on_disk_says_later(
    tmp_path: Path,
) -> None:
    """A daemon that swaps in a decoy with no CRs after ``git add`` (and back before the
    file is hashed) had 3,000 lone CRs counted as none (a red-team pass): the count is
    read from the object git staged."""
    tree = ensure_worktree(create_sample_repo(tmp_path / "repo"), tmp_path / "ws", "run-1", "HEAD")
    body = "\r".join(f"x{i} = {i}" for i in range(3000)) + "\n"
    (tree.path / "calc.py").write_text(body, newline="")
    staged = stage_edits(tree)
    (tree.path / "calc.py").write_text("x = 1\n")  # the decoy, after staging

    (change,) = [c for c in staged if c.path == "calc.py"]
    assert change.added is not None
    assert change.added >= 3000


def _blob(repo: Path, content: bytes) -> str:
    written = subprocess.check_output(
        ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=content
    )
    return written.decode().strip()


def _counted(tmp_path: Path, content: bytes) -> int:
    tree = ensure_worktree(create_sample_repo(tmp_path / "repo"), tmp_path / "ws", "run-1", "HEAD")
    blob = _blob(tree.path, content)
    return lone_carriage_returns(tree, [blob])[blob]


def test_a_stream_cut_short_is_an_error_never_a_count() -> None:
    """git killed at its deadline ends the stream mid-object: the count fails, it does
    not pass the bytes read so far as the file's."""
    blob = "a" * 40
    cut = io.BytesIO(f"{blob} blob 10\n".encode() + b"\r\r\r")
    with pytest.raises(GitError, match="cut short"):
        git_ops._lone_crs_in_next_blob(cut, blob)
    with pytest.raises(GitError, match="no blob"):
        git_ops._lone_crs_in_next_blob(io.BytesIO(f"{blob} missing\n".encode()), blob)
