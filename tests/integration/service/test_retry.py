"""Retry on real Postgres: a failed run resumes at its failed step under new attempts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Run, StepRun
from shared.domain.run_machine import StepId
from shared.errors import Conflict
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import retry_run, start_run
from shared.service.uow import UnitOfWork
from tests.factories import OpenCodeCallFactory, PlanApprovalFactory, RunFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def failed_at(db: Session, step: StepId, *, attempts: int = 3, **traits: object) -> Run:
    """A run failed at ``step`` after ``attempts`` failed calls."""
    run: Run = RunFactory(
        status="failed", last_step=step.value, next_action="none", error="boom", **traits
    )
    run.finished_at = NOW
    db.add(
        StepRun(
            run_id=run.id,
            step_id=step.value,
            status="failed",
            started_at=NOW,
            finished_at=NOW,
            error="boom",
            fence=2,
        )
    )
    for attempt in range(1, attempts + 1):
        OpenCodeCallFactory(run=run, step_id=step.value, attempt=attempt, status="failed")
    db.commit()
    return run


def retry(sessions: sessionmaker[Session], run_id: str, sender: InMemorySender) -> object:
    with UnitOfWork(sessions, sender) as uow:
        return retry_run(uow, run_id, operator="ops", now=NOW, lease_s=30)


def test_a_failed_compile_resumes_under_new_attempts_and_is_counted(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = failed_at(db, StepId.COMPILE)
    sender = InMemorySender()

    retry(sessions, run.id, sender)

    assert sender.sent == [RunStep(StepId.COMPILE, run.id)]
    with sessions() as s:
        again = s.get(Run, run.id)
        assert again is not None
        assert (again.status, again.next_action, again.error, again.finished_at) == (
            "compiling",
            "run:CompileST",
            None,
            None,
        )
        assert again.retry_count == 1
        row = s.execute(select(StepRun).where(StepRun.run_id == run.id)).scalar_one()
        assert (row.status, row.round, row.attempt_base, row.deliveries) == ("running", 2, 3, 0)
        assert row.round_input == {
            "kind": "retry",
            "requested_by": "ops",
            "previous_error": "boom",
            "resumes": None,
        }


def test_a_step_after_the_gate_resumes_only_with_its_plan_approved(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    unapproved = failed_at(db, StepId.APPLY_PATCH, plan_sha256="a" * 64)
    sender = InMemorySender()
    with pytest.raises(Conflict, match="without an approved plan"):
        retry(sessions, unapproved.id, sender)
    approved = failed_at(db, StepId.EXECUTE, plan_sha256="b" * 64)
    PlanApprovalFactory(run=approved, approver="ann")
    db.commit()

    retry(sessions, approved.id, sender)

    assert sender.sent == [RunStep(StepId.EXECUTE, approved.id)]


@pytest.mark.parametrize("status", ["succeeded", "rejected", "cancelled", "compiling"])
def test_only_a_failed_run_can_be_retried(
    db: Session, sessions: sessionmaker[Session], status: str
) -> None:
    run = RunFactory(status=status)
    db.commit()
    with pytest.raises(Conflict, match="only a failed run can be retried"):
        retry(sessions, run.id, InMemorySender())


def test_a_second_retry_while_the_first_runs_is_a_conflict_and_sends_nothing(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = failed_at(db, StepId.COMPILE)
    sender = InMemorySender()
    retry(sessions, run.id, sender)
    with pytest.raises(Conflict):
        retry(sessions, run.id, sender)
    assert len(sender.sent) == 1


def test_starting_an_ended_intent_again_says_how_to_go_again(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    failed = failed_at(db, StepId.COMPILE)
    done = RunFactory(succeeded=True)
    db.commit()
    with (
        pytest.raises(Conflict, match=f"POST /runs/{failed.id}/retry") as refused,
        UnitOfWork(sessions, InMemorySender()) as uow,
    ):
        start_run(uow, failed.intent_id, app_version="test", now=NOW)
    assert refused.value.details["rule"] == ["one_run_per_intent"]
    with (
        pytest.raises(Conflict, match="submit a new intent"),
        UnitOfWork(sessions, InMemorySender()) as uow,
    ):
        start_run(uow, done.intent_id, app_version="test", now=NOW)
