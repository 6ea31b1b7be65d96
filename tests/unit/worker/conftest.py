"""A one-file repository per test, copied from one ``git init`` per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.worker.git_ops import git

CALC = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="session")
def calc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "calc.py").write_text(CALC)
    git(path, "add", "calc.py")
    git(path, "commit", "-q", "-m", "calc")
    return path


@pytest.fixture
def repo(calc_template: Path, tmp_path: Path) -> Path:
    """A repository of this test's own (``calc.py`` committed on ``main``)."""
    path = Path(shutil.copytree(calc_template, tmp_path / "repo", symlinks=True))
    git(path, "update-index", "-q", "--refresh")  # the copy's files have new inodes
    return path
