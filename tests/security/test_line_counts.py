"""``max_lines`` counts the lines a reader of the file sees, not only git's LFs.

A lone carriage return ends a line for Python but not for git's numstat: 5,000
statements joined by CRs were one line against a 2,000-line limit, and all of them ran.
(Found by a red-team pass.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.worker.git_ops import lone_carriage_returns
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
)
def test_lone_carriage_returns_are_counted_and_crlf_is_not(
    tmp_path: Path, content: bytes, lone: int
) -> None:
    (tmp_path / "f").write_bytes(content)
    assert _counted(tmp_path, "f") == lone


def test_a_crlf_split_across_read_chunks_is_one_line_break(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * ((1 << 20) - 1) + b"\r\n" + b"\r")  # CR ends chunk one
    assert _counted(tmp_path, "f") == 1


def _counted(folder: Path, name: str) -> int:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return lone_carriage_returns(fd, name)
    finally:
        os.close(fd)
