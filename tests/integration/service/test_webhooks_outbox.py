"""The step runner's record of an outcome adds the run event's outbox row in the same
transaction that moves the run (shared/service/steps.py's record_outcome)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import unit_of_work
from shared.db.models import Run
from shared.db.repos.snapshots import entered_snapshot
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepLease
from shared.domain.step_outcome import StepOutcome
from shared.service.steps import record_outcome
from shared.service.webhooks import list_deliveries
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def deciding_run(db: Session, sessions: sessionmaker[Session]) -> StepLease:
    run: Run = RunFactory(status="deciding", last_step="DecideST", next_action="run:DecideST")
    db.commit()
    with unit_of_work(sessions) as s:
        found = entered_snapshot(s, run.id, StepId.DECIDE, owner="t", lease_s=60, app_version="t")
    assert found is not None
    entered = found[1]
    assert entered is not None
    return StepLease(run.id, StepId.DECIDE, entered.fence, 60)


@pytest.mark.parametrize(
    ("outcome", "event", "next_action"),
    [
        (StepOutcome.failed("boom", {}), "failed", "none"),
        (StepOutcome(ok=False, error="over budget", budget_stop=True), "budget", "await:budget"),
        (StepOutcome(ok=True, output={"next_action": "escalate"}), "waiting_input", "await:answer"),
    ],
    ids=["failed", "budget", "question"],
)
def test_an_outcome_that_stops_or_ends_the_run_adds_its_event_with_the_move(
    db: Session,
    sessions: sessionmaker[Session],
    outcome: StepOutcome,
    event: str,
    next_action: str,
) -> None:
    lease = deciding_run(db, sessions)

    with unit_of_work(sessions) as s:
        record_outcome(s, lease, outcome, NOW)

    [delivery] = list_deliveries(db, run_id=lease.run_id)
    assert (delivery.event, delivery.status, delivery.next_attempt_at) == (event, "pending", NOW)
    run = db.get(Run, lease.run_id)
    assert run is not None
    db.refresh(run)
    assert run.next_action == next_action


def test_an_outcome_rolled_back_leaves_no_event(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    lease = deciding_run(db, sessions)

    def recorded_then_failed() -> None:
        with unit_of_work(sessions) as s:
            record_outcome(s, lease, StepOutcome.failed("boom", {}), NOW)
            raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError, match="the commit failed"):
        recorded_then_failed()

    assert list_deliveries(db, run_id=lease.run_id) == []


def test_a_step_that_hands_on_to_the_next_adds_no_event(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    lease = deciding_run(db, sessions)

    with unit_of_work(sessions) as s:
        record_outcome(s, lease, StepOutcome(ok=True, output={"next_action": "run"}), NOW)

    assert list_deliveries(db, run_id=lease.run_id) == []
