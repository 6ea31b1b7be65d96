"""The patch an approver reads names each file as git stores it, whatever the
repository's config says about how diffs look (red-team helper-111).

kodo's ``patch.diff`` is ``git diff --stat --binary --full-index -M HEAD <tree>`` run
hardened, but nothing pins the prefixes: a repository's ``diff.noprefix=true`` drops
``a/`` and ``b/`` from every header. services.api.diff_view then reads a header by its
``a/... b/...`` shape: a change with no ``---``/``+++`` lines (a new binary file, a
mode change) to ``a/x b/setup.py`` has header ``diff --git a/x b/setup.py a/x
b/setup.py``, which the run page shows as ``setup.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devstack.sample_repo import create_sample_repo
from services.api.diff_view import parse_patch
from services.worker.git_ops import ensure_worktree, stage_edits, staged_patch


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def test_the_approver_sees_the_name_git_stores_under_diff_noprefix(tmp_path: Path) -> None:
    """Rule: the approver is shown what lands. With the repository's ``diff.noprefix``,
    a new binary file at ``a/x b/setup.py`` must still be shown under that name."""
    repo = create_sample_repo(tmp_path / "repo")
    _git(repo, "config", "diff.noprefix", "true")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    planted = tree.path / "a" / "x b" / "setup.py"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"\x00\x01binary payload\x00")

    assert [c.path for c in stage_edits(tree)] == ["a/x b/setup.py"]
    patch = staged_patch(tree, max_bytes=1 << 20)
    shown = parse_patch(patch.diff.decode())

    assert [f.path for f in shown.files] == ["a/x b/setup.py"], (
        f"the run page names {[f.path for f in shown.files]} (unparsed {shown.unparsed!r}) for a"
        f" change to 'a/x b/setup.py'; patch.diff reads {patch.diff[:80]!r}"
    )
