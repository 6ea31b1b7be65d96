"""app_version() names this very checkout: the commit it runs, and whether it is dirty."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from shared.version import app_version, build_version

pytestmark = pytest.mark.integration


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_process_running_from_a_checkout_reports_its_commit(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    sha = _git(root, "rev-parse", "--short=7", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain"))
    expected = f"{version('kodo')}+g{sha}" + (".dirty" if dirty else "")
    assert app_version() == expected
    assert app_version() is app_version(), "computed once per process"


def test_a_checkout_with_uncommitted_changes_is_dirty_and_a_build_id_wins(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "a.txt").write_text("1\n")
    _git(root, "add", "a.txt")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = _git(root, "rev-parse", "--short=7", "HEAD")
    assert build_version({}, root).endswith(f"+g{sha}")
    (root / "a.txt").write_text("2\n")
    assert build_version({}, root).endswith(f"+g{sha}.dirty")
    assert build_version({"KODO_BUILD_ID": "img.42"}, root).endswith("+img.42")
    assert build_version({}, tmp_path / "no-git").endswith("+unknown")
