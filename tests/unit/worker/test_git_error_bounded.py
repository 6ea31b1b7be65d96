"""What git says on failure is carried in bounded words (red-team helper-116).

A base tree of names no file system takes made git's checkout say one line per file;
the worker raised all 14 MB of it in one GitError and logged it in one line.
"""

from __future__ import annotations

import subprocess

from services.worker.git_ops import MAX_SAID_CHARS, _failed


def test_a_failing_git_s_long_error_is_cut_and_its_length_said() -> None:
    said = b"error: unable to create file x: File name too long\n" * 300_000
    failed = _failed(["checkout"], subprocess.CompletedProcess(["git"], 128, b"", said))
    message = str(failed)
    assert len(message) < MAX_SAID_CHARS + 200
    assert message.startswith("git checkout: error: unable to create file x")
    assert message.endswith(f"... [{len(said)} bytes]")


def test_a_short_error_is_carried_whole() -> None:
    failed = _failed(["add"], subprocess.CompletedProcess(["git"], 1, b"", b"fatal: no\n"))
    assert str(failed) == "git add: fatal: no"
