"""What kodo reads every few seconds is found by index, however long the history is.

A deployment keeps every run (triage is SQL-first). Each statement here runs on a
timer (the reconciler's cleanup, the /metrics scrape, ``kodo doctor``) and must not
read the ended runs to find the few it wants: its plan on a history of thousands of
ended runs is checked for a whole-table scan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from shared.db.repos.metrics import MetricsRepo
from shared.db.repos.triage import TriageRepo
from shared.service.delivery import due_cleanups

pytestmark = pytest.mark.integration

ENDED_RUNS = 4000
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def history(db: Session) -> Session:
    """Thousands of ended, cleaned-up runs, a few still moving and two awaiting cleanup."""
    db.execute(
        text(
            "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
            " SELECT 'h' || i, '/repo', 'g', 'main', md5(i::text)"
            " FROM generate_series(1, CAST(:n AS int)) AS i"
        ),
        {"n": ENDED_RUNS + 7},
    )
    db.execute(
        text(
            "INSERT INTO app.runs (id, intent_id, status, next_action, retry_count, app_version,"
            " worktree_path, finished_at, worktree_removed_at, updated_at)"
            " SELECT 'h' || i, 'h' || i, 'succeeded', 'done', 0, 't', '/ws/h' || i,"
            " :old, :old, :old FROM generate_series(1, CAST(:n AS int)) AS i"
        ),
        {"n": ENDED_RUNS, "old": NOW - timedelta(days=30)},
    )
    for i, status in enumerate(("compiling", "applying", "executing", "waiting_input", "failed")):
        ended = status == "failed"
        db.execute(
            text(
                "INSERT INTO app.runs (id, intent_id, status, next_action, retry_count,"
                " app_version, worktree_path, finished_at, updated_at)"
                " VALUES (:id, :id, :status, 'x', 0, 't', :path, :finished, :updated)"
            ),
            {
                "id": f"h{ENDED_RUNS + 1 + i}",
                "path": f"/ws/h{ENDED_RUNS + 1 + i}",
                "status": status,
                "finished": NOW - timedelta(hours=2) if ended else None,
                "updated": NOW - timedelta(hours=2),
            },
        )
    db.execute(text("ANALYZE app.runs"))
    db.commit()
    return db


@contextmanager
def statements(db: Session) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its parameters) sent while the block runs."""
    seen: list[tuple[str, Any]] = []
    engine = db.get_bind()

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _m: bool) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan_of(db: Session, read: Callable[[Session], object]) -> str:
    """The plan Postgres chose for the one statement ``read`` sends."""
    with statements(db) as seen:
        read(db)
    db.rollback()
    [(statement, params)] = seen
    plan = db.connection().exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", params)
    shown = json.dumps(plan.scalar_one())
    db.rollback()
    return shown


def test_the_reconcilers_cleanup_reads_only_the_runs_with_a_worktree_left(history: Session) -> None:
    due = due_cleanups(history, now=NOW, grace_s=600)
    assert [c.run_id for c in due] == [f"h{ENDED_RUNS + 5}"], "the failed run, an hour past grace"

    shown = plan_of(history, lambda s: due_cleanups(s, now=NOW, grace_s=600))
    assert "Seq Scan" not in shown, shown
    assert "ix_runs_cleanup_due" in shown, shown


def test_metrics_count_stuck_runs_by_their_status_not_by_reading_the_ended_ones(
    history: Session,
) -> None:
    stuck = MetricsRepo(history).stuck_runs(NOW - timedelta(hours=1))
    assert stuck == {"compiling": 1, "applying": 1, "executing": 1}

    shown = plan_of(history, lambda s: MetricsRepo(s).stuck_runs(NOW - timedelta(hours=1)))
    assert "Seq Scan" not in shown, shown


def test_doctor_counts_idle_live_runs_by_their_status(history: Session) -> None:
    idle = TriageRepo(history).active_runs_idle_for(60)
    assert idle == {"applying": 1, "compiling": 1, "executing": 1, "waiting_input": 1}

    shown = plan_of(history, lambda s: TriageRepo(s).active_runs_idle_for(60))
    assert "Seq Scan" not in shown, shown


def test_doctor_finds_the_unknown_calls_without_reading_the_ledger(history: Session) -> None:
    """Three calls per ended run, all recorded; three of unknown outcome in two runs."""
    history.execute(
        text(
            "INSERT INTO app.opencode_calls"
            " (op_key, run_id, step_id, attempt, agent, session_id, request, status)"
            " SELECT md5('h' || i || s), 'h' || i, s, 1, 'plan', 'ses_' || i || s, '{}'::jsonb,"
            " 'succeeded' FROM generate_series(1, CAST(:n AS int)) AS i,"
            " unnest(ARRAY['CompileST', 'ApplyPatchST', 'DecideST']) AS s"
        ),
        {"n": ENDED_RUNS},
    )
    for run, step in ((1, "CompileST"), (1, "ApplyPatchST"), (2, "CompileST")):
        history.execute(
            text(
                "INSERT INTO app.opencode_calls"
                " (op_key, run_id, step_id, attempt, agent, session_id, request, status)"
                " VALUES (md5(:run || :step), :run, :step, 1, 'plan', NULL, '{}'::jsonb,"
                " 'unknown')"
            ),
            {"run": f"h{ENDED_RUNS + run}", "step": step},
        )
    history.execute(text("ANALYZE app.opencode_calls"))
    history.commit()

    unknown = TriageRepo(history).unknown_calls_by_run()
    assert unknown == {f"h{ENDED_RUNS + 1}": 2, f"h{ENDED_RUNS + 2}": 1}

    shown = plan_of(history, lambda s: TriageRepo(s).unknown_calls_by_run())
    assert "Seq Scan" not in shown, shown
    assert "ix_opencode_calls_unknown" in shown, shown
