"""An API app on the real test database and its own Redis database (14).

Other suites share this Redis server, so only database 14 is ever flushed.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.queue import QUEUE
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
API_REDIS_DB = 14
MAX_BODY = 8192


@dataclass(frozen=True)
class Sent:
    task: str
    args: list[Any]


@pytest.fixture
def api_redis_url(redis_url: str) -> str:
    base, _, _db = redis_url.rpartition("/")
    return f"{base}/{API_REDIS_DB}"


@pytest.fixture
def broker(api_redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(api_redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def sent_tasks(broker: Redis) -> list[Sent]:
    """The messages kombu left on the ``kodo`` list, oldest first."""
    sent = []
    for raw in reversed(broker.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        sent.append(Sent(task=message["headers"]["task"], args=args))
    return sent


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = (tmp_path / "repos").resolve()
    root.mkdir()
    return root


def make_git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "calc.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return path


@pytest.fixture
def git_repo(repo_root: Path) -> Path:
    return make_git_repo(repo_root / "sample")


@pytest.fixture
def settings(database_url: str, api_redis_url: str, repo_root: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=api_redis_url,
        repo_roots=(repo_root,),
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture
def app(settings: Settings, sessions: sessionmaker[Session], broker: Redis) -> Iterator[Flask]:
    built = create_app(settings, clock=FixedClock(NOW))
    yield built
    state_of(built).close()


def issue_token(sessions: sessionmaker[Session], name: str, role: Role) -> str:
    with UnitOfWork(sessions) as uow:
        return create_token(uow, name, role)


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    """A client that presents no token."""
    return app.test_client()


@pytest.fixture
def client(app: Flask, sessions: sessionmaker[Session]) -> FlaskClient:
    """A client authenticated as ``ann``, an admin (every permission)."""
    authed = app.test_client()
    token = issue_token(sessions, "ann", Role.ADMIN)
    authed.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return authed
