"""Symlinks are judged from what git holds, never from the disk.

What kodo commits is the index it staged, and what later runs check out is the commit;
the disk is the daemon's to rewrite between kodo's ``git add`` and its judgement. A
daemon that turned ``d -> .`` into a folder just then had ``l -> d/..`` judged inside
(on disk ``d/..`` was the worktree) and committed, though every checkout of the commit
has ``l`` lead out; and the base check, whose verdict is remembered by commit, could be
made to remember a base with ``w -> ..`` as clean for every later run. (Found by a
helper attacking the pinned worktree; shared/domain/tree_links.py resolves the links.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    commit_index,
    ensure_worktree,
    escaping_links,
    staged_changes,
    tree_git,
)
from shared.domain.change_check import check_changes
from shared.domain.policy import Policy
from tests.integration.worker.hostile import commit_all, plan_of

pytestmark = pytest.mark.integration

BOTH = plan_of({"path": "d", "change": "add"}, {"path": "l", "change": "add"})


def _leads_out(repo: Path, commit: str, tmp: Path, name: str) -> bool:
    """Whether ``name`` in a fresh checkout of ``commit`` resolves outside it."""
    out = tmp / "fresh"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(out), commit],
        check=True,
        capture_output=True,
    )
    return not Path(os.path.realpath(out / name)).is_relative_to(out.resolve())


def test_a_link_made_to_look_inside_on_disk_after_staging_is_still_refused(
    tmp_path: Path,
) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "d").symlink_to(".")
    (tree.path / "l").symlink_to("d/..")
    tree_git(
        tree, "add", "--all", "--force", "--", ".", writes="objects"
    )  # stage_edits, first half
    (tree.path / "d").unlink()  # the daemon, between kodo's add and its judgement
    (tree.path / "d").mkdir()

    changes = staged_changes(tree)  # stage_edits, second half
    report = check_changes(changes, BOTH, Policy(allow_symlinks=True))

    assert [v.rule for v in report.violations] == ["symlink"]
    assert escaping_links(tree) == [("l", "d/..")]
    commit = commit_index(tree, "what a judge that read the disk would have let through")
    assert _leads_out(repo, commit, tmp_path, "l"), "the index is what gets committed"


def test_a_base_link_hidden_on_disk_is_never_remembered_clean(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    (repo / "w").symlink_to("..")
    base = commit_all(repo, "w")
    first = ensure_worktree(repo, tmp_path / "ws", "run-1", base)
    (first.path / "w").unlink()  # the daemon, as the worktree appears
    (first.path / "w").mkdir()

    assert escaping_links(first, base) == [("w", "..")]
    second = ensure_worktree(repo, tmp_path / "ws", "run-2", base)
    assert escaping_links(second, base) == [("w", "..")]
