"""The collector's wake: the calls of ended sessions are marked idle, found by index.

Its statement runs once per batch of ended sessions for as long as kodo runs, against a
ledger that keeps every call ever made: it must never scan the table.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.repos.ledger import _WAKE, LedgerRepo, Woken
from shared.domain.turn_spend import Spent, over_bound_error
from tests.factories import RunFactory
from tests.integration.shared.test_direct import prepared_here

pytestmark = pytest.mark.integration

LEDGER_ROWS = 3000


def _calls(db: Session, run_id: str, first: int, count: int, status: str) -> None:
    """``count`` ledger rows of ``run_id``, sessions ``ses_<n>``, attempts from ``first``."""
    db.execute(
        text(
            "INSERT INTO app.opencode_calls"
            " (op_key, run_id, step_id, attempt, agent, session_id, request, status)"
            " SELECT md5(:run_id || i), :run_id, 'CompileST', i, 'plan', 'ses_' || i,"
            " '{}'::jsonb, :status"
            " FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i"
        ),
        {"run_id": run_id, "first": first, "last": first + count - 1, "status": status},
    )


def test_a_wake_marks_the_open_calls_of_the_ended_sessions_and_names_the_sent_ones(
    db: Session,
) -> None:
    run = RunFactory()
    db.commit()
    _calls(db, run.id, 1, 1, "sent")
    _calls(db, run.id, 2, 1, "claimed")
    _calls(db, run.id, 3, 1, "succeeded")
    _calls(db, run.id, 4, 1, "sent")
    db.commit()

    woken = LedgerRepo(db).wake(["ses_1", "ses_2", "ses_3", "ses_404"])
    db.commit()

    assert woken == [Woken(run.id, "CompileST", None)]
    idle = db.execute(
        text("SELECT session_id FROM app.opencode_calls WHERE idle_at IS NOT NULL ORDER BY 1")
    ).scalars()
    assert list(idle) == ["ses_1", "ses_2"], "open calls only; ses_4 did not end"


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_a_wake_finds_its_calls_by_index_in_a_large_ledger(
    db: Session, plan_cache_mode: str
) -> None:
    run = RunFactory()
    db.commit()
    _calls(db, run.id, 1, LEDGER_ROWS, "succeeded")
    db.execute(text("ANALYZE app.opencode_calls"))
    db.commit()
    # the text the collector sends ($1, $2...), each value in its place
    compiled = direct.compile_once(_WAKE, db.get_bind().dialect)
    values = direct.parameters(compiled, {"sessions": ["ses_7", "ses_2999"], "daemon": "d"})
    args = ", ".join(
        "ARRAY['ses_7', 'ses_2999']" if name == "sessions" else f"'{values[name]}'"
        for name in compiled.order
    )
    conn = db.connection()
    conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
    # a prepared statement: the plan a connection reuses after psycopg prepares it
    conn.exec_driver_sql(f"PREPARE wake AS {compiled.sql}")
    try:
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE wake({args})").scalar_one()
    finally:
        conn.exec_driver_sql("DEALLOCATE wake")  # it outlives the transaction
        db.rollback()

    shown = json.dumps(plan)
    assert "Seq Scan" not in shown, shown
    assert "ix_opencode_calls_session" in shown, shown


def test_the_collector_repeating_its_wake_on_one_connection_never_has_it_prepared(
    db: Session,
) -> None:
    """A plan Postgres kept for it while the ledger was small would read every page of a
    large one until something analyzed the table: 375 pages a wake at a thousand calls
    on the bench's database, which nothing analyzes."""
    run = RunFactory()
    db.commit()
    _calls(db, run.id, 1, 1, "sent")
    db.commit()
    for _ in range(8):
        LedgerRepo(db).wake(["ses_404"])
    wake = direct.compile_once(_WAKE, db.get_bind().dialect).sql
    assert wake not in prepared_here(db)


def test_a_turn_past_its_token_bound_is_marked_while_it_runs_and_its_end_keeps_the_mark(
    db: Session,
) -> None:
    """The collector marks the open call whose turn passed its bound, before aborting it
    (each time: an unconfirmed abort is asked again), whatever the daemon said of it; the
    abort's ``session.error`` (MessageAbortedError) then wakes the step without replacing
    the reason, so the step refuses the turn under the bound's rule."""
    run = RunFactory()
    db.commit()
    _calls(db, run.id, 1, 4, "sent")
    db.execute(
        text(
            "UPDATE app.opencode_calls SET daemon = 'd', request = '{\"directory\": \"/w\"}',"
            " idle_at = CASE WHEN session_id = 'ses_3' THEN now() END,"
            " error = CASE WHEN session_id = 'ses_4' THEN 'UnknownError: x' END"
            " WHERE run_id = :r"
        ),
        {"r": run.id},
    )
    db.commit()
    ledger = LedgerRepo(db)
    mark = over_bound_error(Spent(250_000), 200_000)

    assert ledger.mark_over_bound("ses_1", mark, "d") == ["/w"]
    again = over_bound_error(Spent(400_000), 200_000)
    assert ledger.mark_over_bound("ses_1", again, "d") == ["/w"], "aborted again, marked once"
    assert ledger.mark_over_bound("ses_2", mark, "another") == [], "another daemon's event"
    assert ledger.mark_over_bound("ses_3", mark, "d") == ["/w"], "ended, not yet collected"
    assert ledger.mark_over_bound("ses_4", mark, "d") == ["/w"], "outranks the daemon's error"
    assert ledger.wake_with_error("ses_1", "MessageAbortedError: Aborted", "d") == [
        Woken(run.id, "CompileST", None)
    ]
    assert ledger.wake_with_error("ses_2", "MessageAbortedError: Aborted", "d")
    db.commit()
    errors = dict(
        db.execute(
            text(
                "SELECT session_id, error FROM app.opencode_calls"
                " WHERE session_id IN ('ses_1', 'ses_2')"
            )
        ).all()
    )
    assert errors == {"ses_1": mark, "ses_2": "MessageAbortedError: Aborted"}
    outranked = db.execute(
        text("SELECT error FROM app.opencode_calls WHERE session_id = 'ses_4'")
    ).scalar_one()
    assert outranked == mark
