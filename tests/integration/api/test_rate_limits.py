"""KODO_INTENT_RATE: intents counted per token in Redis, across API processes; past the
limit a 429 in kodo's error shape that says how long to wait, and nothing stored."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.models import Intent
from shared.service.tokens import Role
from tests.integration.api.conftest import NOW, issue_token

pytestmark = pytest.mark.integration

RATE = 3


@pytest.fixture
def rate_settings(settings: Settings) -> Settings:
    # a prefix of the test's own: the window's keys are nobody else's
    return dataclasses.replace(
        settings, intent_rate=f"{RATE}/minute", redis_key_prefix=f"t-{uuid.uuid4().hex}"
    )


def built(settings: Settings) -> Flask:
    return create_app(settings, clock=FixedClock(NOW))


@pytest.fixture
def limited(rate_settings: Settings) -> Iterator[Flask]:
    app = built(rate_settings)
    yield app
    state_of(app).close()


def as_token(app: Flask, sessions: sessionmaker[Session], name: str) -> FlaskClient:
    client = app.test_client()
    token = issue_token(sessions, name, Role.SUBMITTER)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def intents(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Intent)) or 0


def submit(client: FlaskClient, repo: Path) -> int:
    return client.post("/intents", json={"repo": str(repo), "goal": "g"}).status_code


def test_past_the_rate_a_429_says_how_long_to_wait_and_stores_nothing(
    limited: Flask, sessions: sessionmaker[Session], git_repo: Path, db: Session
) -> None:
    ann = as_token(limited, sessions, "ann")
    codes = [submit(ann, git_repo) for _ in range(RATE)]

    over = ann.post("/intents", json={"repo": str(git_repo), "goal": "g"})

    assert codes == [201] * RATE
    assert over.status_code == 429
    error = over.get_json()["error"]
    assert error["code"] == "too_many_requests"
    assert "KODO_INTENT_RATE" in error["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["X-RateLimit-Limit"] == str(RATE)
    assert over.headers["X-RateLimit-Remaining"] == "0"
    assert intents(db) == RATE


def test_each_token_has_its_own_window(
    limited: Flask, sessions: sessionmaker[Session], git_repo: Path
) -> None:
    ann, bob = as_token(limited, sessions, "ann"), as_token(limited, sessions, "bob")
    for _ in range(RATE):
        submit(ann, git_repo)

    assert submit(ann, git_repo) == 429
    assert submit(bob, git_repo) == 201


def test_the_window_is_shared_by_every_api_process(
    limited: Flask, rate_settings: Settings, sessions: sessionmaker[Session], git_repo: Path
) -> None:
    other = built(rate_settings)  # another process of the same deployment, in effect
    try:
        token = issue_token(sessions, "ann", Role.SUBMITTER)
        here, there = limited.test_client(), other.test_client()
        for client in (here, there):
            client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        codes = [submit(here if n % 2 else there, git_repo) for n in range(RATE + 1)]
    finally:
        state_of(other).close()

    assert codes == [201] * RATE + [429]


def test_only_intents_are_counted(
    limited: Flask, sessions: sessionmaker[Session], git_repo: Path
) -> None:
    ann = as_token(limited, sessions, "ann")
    first = ann.post("/intents", json={"repo": str(git_repo), "goal": "g"}).get_json()
    for _ in range(3 * RATE):
        assert ann.get(f"/intents/{first['intentId']}").status_code == 200

    assert [submit(ann, git_repo) for _ in range(RATE)] == [201] * (RATE - 1) + [429]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on leaving: nothing listens


def test_without_redis_intents_are_refused_not_admitted_uncounted(
    rate_settings: Settings, sessions: sessionmaker[Session], git_repo: Path, db: Session
) -> None:
    away = dataclasses.replace(rate_settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    app = built(away)
    try:
        answer = as_token(app, sessions, "ann").post(
            "/intents", json={"repo": str(git_repo), "goal": "g"}
        )
    finally:
        state_of(app).close()

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "rate_limits_unavailable"
    assert intents(db) == 0
