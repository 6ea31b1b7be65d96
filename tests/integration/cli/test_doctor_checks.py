"""Doctor's database checks turn red on what they exist to find (read via TriageRepo)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from services.cli.doctor import (
    STATS_MIN_ROWS,
    check_held_worktrees,
    check_statistics,
    check_stuck,
    check_unknown_calls,
)
from tests.factories import OpenCodeCallFactory, RunFactory

pytestmark = pytest.mark.integration


def test_an_active_run_idle_past_the_limit_is_stuck_and_a_waiting_one_is_set_aside(
    db: Session, engine: Engine
) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    RunFactory(updated_at=hour_ago)  # compiling
    RunFactory(waiting_input=True, updated_at=hour_ago)
    RunFactory(succeeded=True, updated_at=hour_ago)
    RunFactory()  # compiling, but just now
    db.commit()
    check = check_stuck(engine, 30)
    assert (check.ok, check.data["by_status"], check.data["waiting_input"]) == (
        False,
        {"compiling": 1},
        1,
    )
    assert check_stuck(engine, 120).ok


def test_a_call_of_unknown_outcome_turns_the_check_red_and_names_its_run(
    db: Session, engine: Engine
) -> None:
    assert check_unknown_calls(engine).ok
    call = OpenCodeCallFactory(status="unknown")
    OpenCodeCallFactory(status="succeeded")
    db.commit()
    check = check_unknown_calls(engine)
    assert (check.ok, check.data["runs"]) == (False, {call.run_id: 1})


def test_worktrees_held_open_are_counted_and_a_failed_release_turns_red(
    db: Session, engine: Engine
) -> None:
    now = datetime.now(UTC)
    RunFactory(instances_opened_at=now)  # compiling: moving
    RunFactory(waiting_input=True, instances_opened_at=now)
    RunFactory(succeeded=True)  # released (or never opened)
    db.commit()
    check = check_held_worktrees(engine)
    assert (check.ok, check.data) == (True, {"moving": 1, "resting": 1, "release_failed": 0})
    RunFactory(succeeded=True, instances_opened_at=now, instances_release_failed_at=now)
    db.commit()
    check = check_held_worktrees(engine)
    assert (check.ok, check.data) == (False, {"moving": 1, "resting": 2, "release_failed": 1})


PROBE = "app.doctor_stats_probe"


def _run(engine: Engine, sql: str, **params: int) -> None:
    """``sql`` committed, its row counts published to Postgres's statistics at once (they
    are otherwise flushed about once a second)."""
    with engine.begin() as conn:
        conn.execute(text(sql), params)
        conn.execute(text("SELECT pg_stat_force_next_flush()"))


def _probe_listed(engine: Engine) -> int | None:
    tables: dict[str, int] = check_statistics(engine).data["tables"]
    return tables.get(PROBE)


@pytest.fixture
def probe(engine: Engine) -> Iterator[None]:
    """A scratch table in kodo's schema, autovacuum off for it whatever the server says."""
    _run(engine, "CREATE TABLE app.doctor_stats_probe (n int) WITH (autovacuum_enabled = false)")
    yield
    _run(engine, "DROP TABLE IF EXISTS app.doctor_stats_probe")


@pytest.mark.usefixtures("probe")
def test_a_table_nothing_analyzes_is_named_until_analyzed_and_again_once_rewritten(
    engine: Engine,
) -> None:
    rows = STATS_MIN_ROWS + 200
    _run(engine, "INSERT INTO app.doctor_stats_probe SELECT generate_series(1, :n)", n=rows)
    check = check_statistics(engine)
    assert check.ok
    assert check.data["tables"][PROBE] == rows
    assert check.detail.startswith("WARNING: ")
    assert f"{PROBE} ({rows} rows)" in check.detail

    _run(engine, "ANALYZE app.doctor_stats_probe")
    assert _probe_listed(engine) is None

    _run(engine, "DELETE FROM app.doctor_stats_probe WHERE n <= 200")  # fewer than it holds
    assert _probe_listed(engine) is None
    _run(engine, "UPDATE app.doctor_stats_probe SET n = n + 1")  # as many again: stale
    assert _probe_listed(engine) == STATS_MIN_ROWS


@pytest.mark.usefixtures("probe")
def test_a_small_table_is_never_named(engine: Engine) -> None:
    below = STATS_MIN_ROWS - 1
    _run(engine, "INSERT INTO app.doctor_stats_probe SELECT generate_series(1, :n)", n=below)
    assert _probe_listed(engine) is None
