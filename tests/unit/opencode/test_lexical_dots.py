"""A relative path is judged as the daemon resolves it (red-team helper-114).

opencode 1.18.33 resolves a tool's relative path with Node's ``path.resolve`` /
``path.join``: ``..`` collapsed lexically, links followed only afterwards, by the
kernel, on the path that is left. kodo's ``_judge`` follows links first (realpath), so
through a link to a folder deep inside the worktree (tracked by the repository)
``hop/../../..`` stays inside for kodo and leaves the worktree for the daemon.
Proved on the real daemon by tests/conformance/test_confinement.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.opencode.confinement import violations


@pytest.mark.parametrize(
    ("tool", "key"),
    [
        ("read", "filePath"),
        ("write", "filePath"),
        ("edit", "filePath"),
        ("list", "path"),
        ("grep", "path"),
    ],
)
def test_dots_after_a_link_are_judged_as_the_daemon_collapses_them(
    tmp_path: Path, tool: str, key: str
) -> None:
    worktree = tmp_path / "ws" / "run1"
    deep = worktree.joinpath("deep", *[f"d{i}" for i in range(8)])
    deep.mkdir(parents=True)
    (worktree / "hop").symlink_to(deep.relative_to(worktree))
    secret = tmp_path / "ws" / "run2" / "secret.txt"  # another run's worktree
    secret.parent.mkdir(parents=True)
    secret.write_text("run 2's\n")
    raw = "hop/../../run2/secret.txt"
    assert os.path.normpath(os.path.join(worktree, raw)) == str(secret)  # the daemon's path
    part = {"type": "tool", "tool": tool, "state": {"status": "completed", "input": {key: raw}}}
    found = violations(str(worktree), [part])
    assert [v.rule for v in found] == ["PathOutsideWorktree"], (
        f"{raw!r} opens {secret} on the daemon; kodo judged it {found!r}"
    )
