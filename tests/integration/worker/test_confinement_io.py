"""Confinement against the real filesystem and real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.worker.git_ops import has_symlink_escape

pytestmark = pytest.mark.integration


def test_a_patch_path_through_a_symlink_leading_out_is_caught(tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    (worktree / "src").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (worktree / "link").symlink_to(outside)
    assert has_symlink_escape(worktree, ["src/ok.py"]) is None
    assert has_symlink_escape(worktree, ["link/evil.py"]) == "link/evil.py"
