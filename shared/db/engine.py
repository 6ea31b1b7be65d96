"""Engines and sessions, made by entry points (never at import time)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Engine,
    String,
    create_engine,
    event,
    exc,
    func,
    literal_column,
    make_url,
    true,
)
from sqlalchemy.orm import Session, sessionmaker

from shared.db import jsonb_text

PING_IDLE_S = 1.0
"""A pooled connection idle longer than this is pinged before use (see make_engine)."""

CONNECTION_BOUNDS: dict[str, str] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
"""libpq's bounds on a connection to a server that stopped answering: connecting (and
authenticating) within 5 s, an idle connection whose peer is gone found by TCP
keepalives within a minute, and sent data left unacknowledged for a minute ending it.
``statement_timeout`` and ``lock_timeout`` are the server's: they do nothing for a
half-open connection (a host gone, a NAT or firewall that forgot it), on which a
statement (a lease renewal, a LISTEN connection's sweep, a pool's ping) would wait for
the kernel to give up retransmitting, some fifteen minutes. Ignored on a Unix socket."""


def bounded_url(database_url: str) -> URL:
    """``database_url`` with :data:`CONNECTION_BOUNDS` added where it sets none of its
    own (an operator's explicit value wins)."""
    url = make_url(database_url)
    missing = {k: v for k, v in CONNECTION_BOUNDS.items() if k not in url.query}
    return url.update_query_dict(missing) if missing else url


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30,
    ping_idle_s: float = PING_IDLE_S,
) -> Engine:
    """A pooled engine; each connection gets statement and lock timeouts, and libpq's
    bounds on a server that stopped answering (:data:`CONNECTION_BOUNDS`). A checkout
    that finds no connection free within ``pool_timeout_s`` raises
    ``sqlalchemy.exc.TimeoutError`` (the API answers it 503).

    A connection is pinged before use only when it sat idle in the pool longer than
    ``ping_idle_s`` (a dead one is replaced, as with ``pool_pre_ping``): a step's
    transactions follow each other within milliseconds, and a ping per checkout was a
    round trip per transaction (about 40 per run). One that died within that second
    fails its statement, is invalidated with the pool's other connections, and the
    caller's retry (a task's, a client's) gets a fresh one.

    ``jsonb`` values are written by :func:`shared.db.jsonb_text.dumps` (a NUL, which
    Postgres refuses, stored as U+FFFD). Errors show no parameter values.
    """
    engine = create_engine(
        bounded_url(database_url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        json_serializer=jsonb_text.dumps,
        # A statement's error names its SQL, never its values: those hold token digests,
        # a sign-in's CSRF token and agent text (red-team helper-131), and a log line
        # must not carry a prompt's megabytes either.
        hide_parameters=True,
    )

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since <= ping_idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as err:
            # the pool discards this connection and checks out another (a fresh one)
            raise exc.DisconnectionError(f"pinging a pooled connection failed: {err}") from err

    @event.listens_for(engine, "connect")
    def _timeouts(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute("SET statement_timeout = '30s'; SET lock_timeout = '10s'")
        dbapi_conn.commit()
        _record.info["idle_since"] = time.monotonic()  # just proven alive: no ping

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(factory: sessionmaker[Session]) -> Engine:
    """The engine ``factory``'s sessions are bound to (its pool is theirs)."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError(f"the session factory is bound to {type(bind).__name__}, not an Engine")
    return bind


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def lazy_commit() -> ColumnElement[str]:
    """A column that lets the COMMIT of the statement's transaction return before its
    WAL is on disk: one fsync less on the path of every provider call (3-4 ms each on
    this project's CI machine).

    ``set_config(..., true)`` is ``SET LOCAL`` as a value the statement computes: it
    holds for the transaction the statement runs in. Run alone (AUTOCOMMIT, see
    :class:`shared.service.uow.UnitOfWork`'s ``alone``), that is the statement's own
    one-statement transaction, so no BEGIN, ``SET LOCAL`` and COMMIT are sent: one round
    trip of four (measured here: an UPDATE alone 0.28 ms, with this column 0.10-0.14,
    in a BEGIN, ``SET LOCAL``, COMMIT transaction 0.43). Only evaluated where the
    statement evaluates it: a top-level column, or a RETURNING one of a write that
    matched a row (a write that matched none has nothing to make durable).

    Only for a statement whose loss in a crash of Postgres (never of kodo: the WAL is
    written either way) is recovered from the rows that stay, and that nobody outside
    Postgres sees as done: a wake-up (the reconciling collector and the call's deadline
    redo it) or a park (the step's lease lapses and the call is collected from its
    session). Never a claim, an answer, an outcome or a status. The WAL is sequential:
    the next synchronous commit of any session makes this one durable too.
    """
    setting: ColumnElement[str] = literal_column("'synchronous_commit'")
    value: ColumnElement[str] = literal_column("'off'")
    return func.set_config(setting, value, true(), type_=String).label("lazy_commit")
