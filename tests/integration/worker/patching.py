"""Putting a change into a worktree the way git would, for tests of what kodo reads back.

kodo itself no longer applies typed diffs (the build agent edits, kodo stages); these
tests still need a change made by git, through kodo's hardened ``run_git``.
"""

from __future__ import annotations

from pathlib import Path

from services.worker.git_ops import GIT_TIMEOUT_S
from shared.gitcmd import run_git


def try_apply(worktree: Path, diff: str) -> str | None:
    """Apply ``diff`` to the index and the files; None on success, else git's reason
    (``git apply`` is atomic: a patch that fails leaves every file as it was)."""
    proc = run_git(
        worktree,
        ["apply", "--index", "--whitespace=nowarn", "-"],
        stdin=diff.encode(),
        timeout_s=GIT_TIMEOUT_S,
    )
    return None if proc.returncode == 0 else proc.stderr.decode(errors="replace").strip()
