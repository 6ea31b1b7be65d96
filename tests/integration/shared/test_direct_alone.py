"""``shared.db.direct.alone`` on real Postgres: a pooled connection whose prebuilt
statements each run alone, with no Session, given back to the pool as a transaction's
connection again, and never given back broken.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, exc, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import direct
from shared.db.engine import make_engine
from shared.db.models import Intent, table_of
from tests import factories

pytestmark = pytest.mark.integration

_INTENTS = table_of(Intent)
_RENAME = text("UPDATE app.intents SET goal = :goal WHERE id = :id")
_DUPLICATE = text("INSERT INTO app.intents SELECT * FROM app.intents WHERE id = :id")
_BACKEND = text("SELECT pg_backend_pid()")
_IN_TRANSACTION = text("SELECT now() = statement_timestamp() AS alone")
_COUNT = select(func.count()).select_from(_INTENTS)


@pytest.fixture
def one_connection(database_url: str) -> Iterator[Engine]:
    """A pool of one connection, so every checkout is the same backend until it breaks."""
    eng = make_engine(database_url, pool_size=1, max_overflow=0, pool_timeout_s=5)
    yield eng
    eng.dispose()


def _intent(db: Session) -> str:
    run = factories.RunFactory()
    db.commit()
    return str(run.intent_id)


def _goal(sessions: sessionmaker[Session], intent_id: str) -> str:
    with sessions() as other:
        found = other.execute(select(_INTENTS.c.goal).where(_INTENTS.c.id == intent_id))
        return str(found.scalar_one())


def test_each_statement_is_its_own_transaction_committed_as_it_returns(
    one_connection: Engine, sessions: sessionmaker[Session], db: Session
) -> None:
    intent_id = _intent(db)
    with direct.alone(one_connection) as lone:
        assert direct.execute(lone, _IN_TRANSACTION).scalar_one() is True, "no BEGIN before it"
        direct.execute(lone, _RENAME, {"goal": "renamed alone", "id": intent_id})
        assert _goal(sessions, intent_id) == "renamed alone", "committed without a COMMIT"


def test_the_connection_goes_back_to_the_pool_as_a_transactions_connection(
    one_connection: Engine, sessions: sessionmaker[Session], db: Session
) -> None:
    """The same backend, checked out by a Session next: its write waits for its commit
    and a rollback undoes it."""
    intent_id = _intent(db)
    before = _goal(sessions, intent_id)
    with direct.alone(one_connection) as lone:
        alone_pid = direct.execute(lone, _BACKEND).scalar_one()
    with Session(one_connection) as s:
        assert s.execute(_BACKEND).scalar_one() == alone_pid, "the pool's one connection"
        s.execute(_RENAME, {"goal": "rolled back", "id": intent_id})
        assert _goal(sessions, intent_id) == before
        s.rollback()
    assert _goal(sessions, intent_id) == before


def test_a_refused_statement_raises_sqlalchemys_error_and_keeps_the_connection(
    one_connection: Engine, db: Session
) -> None:
    intent_id = _intent(db)
    with direct.alone(one_connection) as lone:
        pid = direct.execute(lone, _BACKEND).scalar_one()
        with pytest.raises(exc.IntegrityError):
            direct.execute(lone, _DUPLICATE, {"id": intent_id})
        assert direct.execute(lone, _BACKEND).scalar_one() == pid, "usable after the refusal"
    with direct.alone(one_connection) as lone:
        assert direct.execute(lone, _BACKEND).scalar_one() == pid, "and pooled again"


def test_a_broken_connection_is_invalidated_and_never_pooled_again(
    one_connection: Engine, engine: Engine
) -> None:
    with direct.alone(one_connection) as lone:
        pid = direct.execute(lone, _BACKEND).scalar_one()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            killer.commit()
        with pytest.raises(exc.OperationalError) as caught:
            direct.execute(lone, _BACKEND)
        assert caught.value.connection_invalidated
    with direct.alone(one_connection) as lone:
        assert direct.execute(lone, _BACKEND).scalar_one() != pid, "a fresh backend"


def test_an_error_inside_the_block_still_gives_the_connection_back(
    one_connection: Engine,
) -> None:
    with pytest.raises(LookupError), direct.alone(one_connection):
        raise LookupError("the caller's own check")
    with direct.alone(one_connection) as lone:  # the pool's one connection is free again
        assert direct.execute(lone, _COUNT).scalar_one() >= 0


def test_a_connection_pinged_at_check_out_still_runs_alone(
    database_url: str, sessions: sessionmaker[Session], db: Session
) -> None:
    """The pool pings a connection that sat idle (here: every one) before handing it
    out; the ping leaves no transaction behind for the autocommit switch to trip on."""
    pinging = make_engine(database_url, pool_size=1, max_overflow=0, ping_idle_s=-1)
    intent_id = _intent(db)
    try:
        for goal in ("first", "second"):  # the second check-out is pinged too
            with direct.alone(pinging) as lone:
                direct.execute(lone, _RENAME, {"goal": goal, "id": intent_id})
                assert _goal(sessions, intent_id) == goal
    finally:
        pinging.dispose()


def test_a_statement_built_per_call_is_refused_without_a_session(one_connection: Engine) -> None:
    with direct.alone(one_connection) as lone, pytest.raises(TypeError, match="needs a Session"):
        direct.session_of(lone)
