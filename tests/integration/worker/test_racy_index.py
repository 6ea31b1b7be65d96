"""An edit made in the second git wrote the index is seen by staging and undone by a reset.

git trusts an index entry whose file has the size and (whole-second) time it recorded,
unless the entry is as new as the index itself: then it re-reads the file ("racy git").
kodo copies the index (into a quarantine, a scratch folder, back into the run's git dir);
a copy stamped later than git wrote it made such entries look clean. CI lost a repair
that way: the agent fixed ``a + b`` to ``a * b`` (same size) within a second of the
attempt's reset, and git reported the file unchanged, then kept the fix through the next
reset, so the retry saw it made and the commit never held it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    Worktree,
    ensure_worktree,
    quarantined,
    reset_worktree,
    stage_edits,
)

pytestmark = pytest.mark.integration

BEFORE = "    return a + b\n"
AFTER = "    return a * b\n"  # the same size: only the time and the bytes tell it apart


def _second(path: Path) -> int:
    return path.stat().st_mtime_ns // 1_000_000_000


def _edit_in_the_index_second(tree: Worktree) -> None:
    """Reset the worktree (git rewrites calc.py and the index), then edit calc.py within
    the same second, and let that second pass."""
    calc = tree.path / "calc.py"
    for _ in range(5):
        while time.time() % 1 > 0.3:  # start early in a second: the reset takes ~100 ms
            time.sleep(0.05)
        calc.write_text(calc.read_text().replace(BEFORE, "    return a - b\n"))  # dirty
        reset_worktree(tree)
        calc.write_text(calc.read_text().replace(BEFORE, AFTER))
        if _second(calc) == _second(tree.gitdir / "index"):
            break
    else:
        pytest.fail("could not edit within the second the index was written")
    time.sleep(1.1 - time.time() % 1)  # the copies kodo makes next are a second later


@pytest.fixture
def tree(tmp_path: Path) -> Worktree:
    repo = create_sample_repo(tmp_path / "repo")
    return ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def test_staging_sees_a_same_size_edit_made_in_the_index_second(
    tree: Worktree, tmp_path: Path
) -> None:
    _edit_in_the_index_second(tree)

    with quarantined(tree, tmp_path / "ws") as held:
        changes = stage_edits(held)

    assert [c.path for c in changes] == ["calc.py"]


def test_a_reset_undoes_a_same_size_edit_made_in_the_index_second(tree: Worktree) -> None:
    _edit_in_the_index_second(tree)

    reset_worktree(tree)

    assert BEFORE in (tree.path / "calc.py").read_text()
    assert AFTER not in (tree.path / "calc.py").read_text()
