"""Engines and sessions, made by entry points (never at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    database_url: str, *, pool_size: int = 5, max_overflow: int = 10, pool_timeout_s: float = 30
) -> Engine:
    """A pooled engine; each connection gets statement and lock timeouts. A checkout
    that finds no connection free within ``pool_timeout_s`` raises
    ``sqlalchemy.exc.TimeoutError`` (the API answers it 503)."""
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
    )

    @event.listens_for(engine, "connect")
    def _timeouts(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute("SET statement_timeout = '30s'; SET lock_timeout = '10s'")
        dbapi_conn.commit()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
