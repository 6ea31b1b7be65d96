"""Tests against a real API process (gunicorn) on the test database: what an approver
sees of a hostile plan (terminal and browser), and what the access log keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import Stack, start_api
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork

DISPLAY_REDIS_DB = 9  # nothing is sent: the API only pings Redis for /healthz


@contextmanager
def api_process(root: Path, database_url: str, redis_url: str, **settings: str) -> Iterator[Stack]:
    """A real API process (gunicorn) on the test database, with ``settings`` in its
    environment; stopped on exit."""
    base, _, _ = redis_url.rpartition("/")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": f"{base}/{DISPLAY_REDIS_DB}",
        **settings,
    }
    stack = Stack(env=env, log_dir=root / "logs")
    try:
        start_api(stack)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api_stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with api_process(tmp_path_factory.mktemp("display"), database_url, redis_url) as stack:
        yield stack


@pytest.fixture
def reader_token(sessions: sessionmaker[Session]) -> str:
    with UnitOfWork(sessions) as uow:
        return create_token(uow, "rita", Role.APPROVER)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty KODO_HOME: no up.json, so the CLI uses only what the test passes."""
    made = tmp_path / "home"
    made.mkdir()
    return made
