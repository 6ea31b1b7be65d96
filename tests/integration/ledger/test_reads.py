"""The ledger's one-statement reads on real Postgres: what they answer, and that they
run outside a transaction without leaving the pooled connection that way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from bench import sqlcount
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import OpenCodeCall
from shared.domain.vocab import CallStatus
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallOutcome
from tests.factories import OpenCodeCallFactory, RunFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def one_connection(database_url: str) -> Iterator[Engine]:
    """An engine whose pool holds one connection: every session reuses it."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def _grew(before: dict[str, int], after: dict[str, int]) -> tuple[int, int, int]:
    """Statements, BEGINs sent, and transactions begun on AUTOCOMMIT (nothing sent)."""
    keys = ("statements", "begins", "autocommit_begins")
    counts = [after.get(k, 0) - before.get(k, 0) for k in keys]
    return counts[0], counts[1], counts[2]


def test_the_step_s_sessions_in_doubt_are_the_calls_that_may_still_run(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    for attempt, (status, session_id) in enumerate(
        [
            ("claimed", "ses_claimed"),
            ("sent", "ses_sent"),
            ("unknown", "ses_unknown"),
            ("timed_out", "ses_timed_out"),
            ("succeeded", "ses_done"),
            ("failed", "ses_failed"),
            ("sent", None),  # never had a session: nothing to abort
        ],
        start=1,
    ):
        OpenCodeCallFactory(
            run=run,
            step_id="ApplyPatchST",
            attempt=attempt,
            status=status,
            session_id=session_id,
            daemon="d1",
        )
    OpenCodeCallFactory(run=run, step_id="DecideST", status="sent", session_id="ses_other")
    db.commit()

    doubtful = PostgresCallLedger(sessions).sessions_in_doubt(run.id, "ApplyPatchST")

    assert sorted(doubtful) == [
        ("ses_claimed", "d1"),
        ("ses_sent", "d1"),
        ("ses_timed_out", "d1"),
        ("ses_unknown", "d1"),
    ]


def test_a_read_row_comes_back_with_its_age_and_whether_it_awaits_collection(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    sent = OpenCodeCallFactory(status="sent", session_id="ses_1")
    done = OpenCodeCallFactory(status="succeeded", session_id="ses_2", response={"x": 1})
    db.commit()
    ledger = PostgresCallLedger(sessions)

    found = ledger.read(sent.op_key)
    assert found is not None
    row, age = found
    assert (row.op_key, row.status, row.session_id) == (sent.op_key, "sent", "ses_1")
    assert age >= 0.0
    assert ledger.awaits_collection(sent.op_key) is True
    assert ledger.awaits_collection(done.op_key) is False
    assert ledger.read("no-such-key") is None


def test_the_reads_send_no_transaction_and_leave_the_connection_transactional(
    one_connection: Engine, db: Session
) -> None:
    call = OpenCodeCallFactory(status="sent", session_id="ses_1", step_id="ApplyPatchST")
    db.commit()
    sessions = make_session_factory(one_connection)
    ledger = PostgresCallLedger(sessions)
    sqlcount.listen()
    try:
        before = sqlcount.snapshot()
        ledger.read(call.op_key)
        ledger.awaits_collection(call.op_key)
        ledger.sessions_in_doubt(call.run_id, "ApplyPatchST")
        after = sqlcount.snapshot()
    finally:
        sqlcount.unlisten()

    assert _grew(before, after) == (3, 0, 0), (
        "each alone: no transaction, not even one SQLAlchemy keeps"
    )
    # The same pooled connection, in a unit of work again: a rollback undoes the write.
    with sessions() as s:
        s.execute(OpenCodeCall.__table__.delete().where(OpenCodeCall.op_key == call.op_key))
        s.rollback()
    with sessions() as s:
        left = s.execute(
            select(func.count()).select_from(OpenCodeCall).where(OpenCodeCall.op_key == call.op_key)
        ).scalar_one()
    assert left == 1


def test_a_write_that_stands_alone_commits_alone_without_a_transaction(
    one_connection: Engine, db: Session
) -> None:
    """Marking a call started or sent, recording its end, noting a rejected answer: each
    is one statement, which Postgres commits on its own (durably, as a one-statement
    transaction would) without the BEGIN and COMMIT round trips."""
    call = OpenCodeCallFactory(status="claimed", session_id=None)
    db.commit()
    sessions = make_session_factory(one_connection)
    ledger = PostgresCallLedger(sessions)
    ended = CallOutcome(CallStatus.SUCCEEDED, datetime.now(UTC), 12, response={"x": 1})
    sqlcount.listen()
    try:
        before = sqlcount.snapshot()
        ledger.mark_started(call.op_key, "ses_9", "http://127.0.0.1:1")
        assert ledger.mark_sent(call.op_key) is True
        assert ledger.finish(call.op_key, ended, from_status=CallStatus.SENT) is True
        ledger.note_rejected(call.op_key, "judged unusable")
        assert ledger.finish(call.op_key, ended, from_status=CallStatus.SENT) is False
        after = sqlcount.snapshot()
    finally:
        sqlcount.unlisten()

    assert _grew(before, after) == (5, 0, 0)
    db.expire_all()
    row = db.get(OpenCodeCall, call.id)
    assert row is not None
    assert (row.status, row.session_id, row.rejected) == ("succeeded", "ses_9", "judged unusable")
    assert row.response == {"x": 1}
