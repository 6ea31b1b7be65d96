"""``/healthz`` really talks to Postgres and Redis, and says which one is down."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask.testing import FlaskClient

from services.api.app import create_app
from services.api.state import state_of
from shared.config import Settings

pytestmark = pytest.mark.integration

UNREACHABLE_REDIS = "redis://127.0.0.1:1/14"
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/kodo"


def test_health_is_ok_when_postgres_and_redis_answer(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "database": "ok", "redis": "ok"}


def test_health_is_503_naming_the_dependency_that_failed(settings: Settings) -> None:
    app = create_app(replace(settings, redis_url=UNREACHABLE_REDIS))
    try:
        response = app.test_client().get("/healthz")
    finally:
        state_of(app).close()

    assert response.status_code == 503
    body = response.get_json()
    assert (body["ok"], body["database"], body["failed"]) == (False, "ok", ["redis"])
    assert body["redis"].startswith("failed")


def test_health_lists_every_dependency_that_failed(settings: Settings) -> None:
    app = create_app(
        replace(settings, database_url=UNREACHABLE_DATABASE, redis_url=UNREACHABLE_REDIS)
    )
    try:
        response = app.test_client().get("/healthz")
    finally:
        state_of(app).close()

    assert response.status_code == 503
    assert response.get_json()["failed"] == ["database", "redis"]
