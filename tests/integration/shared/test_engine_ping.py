"""A pooled connection is pinged before use only after it sat idle (shared.db.engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from shared.db.engine import make_engine

pytestmark = pytest.mark.integration


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()


@pytest.fixture
def killer(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=1)
    yield eng
    eng.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    database_url: str, killer: Engine
) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_idle_s=0.0)
    try:
        first = _backend_pid(engine)
        _terminate(killer, first)
        assert _backend_pid(engine) != first  # pinged, found dead, replaced: no error
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged_and_a_dead_one_fails_once(
    database_url: str, killer: Engine
) -> None:
    """The trade: no round trip per transaction; a connection that died within the idle
    window fails its statement (the caller retries) and the pool replaces it."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_idle_s=3600.0)
    try:
        first = _backend_pid(engine)
        _terminate(killer, first)
        with pytest.raises(DBAPIError) as failed:
            _backend_pid(engine)
        assert failed.value.connection_invalidated
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()


def test_a_statements_error_names_its_sql_never_its_values(engine: Engine) -> None:
    """Parameters hold token digests, a sign-in's CSRF token and agent text: a logged
    error carries none of them (red-team helper-131). (What Postgres itself quotes in
    its message, a value it could not cast, is its own.)"""
    hidden = "rt131-parameter-that-must-not-be-logged"
    with pytest.raises(DBAPIError) as raised, engine.connect() as conn:
        conn.execute(text("SELECT length(CAST(:value AS text)) / 0"), {"value": hidden})
    assert "division by zero" in str(raised.value)
    assert "SELECT length" in str(raised.value)
    assert hidden not in str(raised.value)
