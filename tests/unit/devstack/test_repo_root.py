"""kodo's state lives in ``<checkout>/.kodo`` (README), wherever the command is run from."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.handle import StackPaths, repo_root

CHECKOUT = Path(__file__).resolve().parents[3]


def test_the_repo_root_is_the_checkout_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert repo_root() == CHECKOUT
    assert (repo_root() / "alembic.ini").is_file()


def test_the_default_home_is_the_checkouts_kodo_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert StackPaths.default().home == CHECKOUT / ".kodo"
