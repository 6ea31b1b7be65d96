"""Doctor's database checks turn red on what they exist to find (read via TriageRepo)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.cli.doctor import check_held_worktrees, check_stuck, check_unknown_calls
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
