"""A decision on a plan waits on the run's row lock, then sees what the holder committed.

The gate reads the run locked, its submitter and its plan's decision in one statement.
Under read committed a statement that waited on a lock reads the locked row anew but
not the rows it joined, so a decision committed while it waited is read again: the
same decision is answered with the record (nothing sent again), another is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.event import listen, remove
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import PlanApproval, Run
from shared.db.repos.approvals import Decided
from shared.domain.run_machine import StepId
from shared.errors import Conflict, Forbidden
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import approve_plan, reject_plan
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def run_id(db: Session) -> str:
    """A run waiting for its plan's approval, submitted by ``sam``."""
    run = RunFactory(waiting_input=True, intent__submitted_by="sam")
    db.commit()
    waiting: str = run.id
    return waiting


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def _while_held(
    engine: Engine,
    sessions: sessionmaker[Session],
    holder: Callable[[UnitOfWork], object],
    waiter: Callable[[UnitOfWork], object],
) -> tuple[object, InMemorySender]:
    """Run ``holder`` in a transaction, start ``waiter`` in another thread, commit the
    holder once the waiter blocks on a lock; (what the waiter returned or raised, its
    sender)."""
    outcome: list[object] = []
    sender = InMemorySender()

    def wait_then_decide() -> None:
        try:
            with UnitOfWork(sessions, sender) as uow:
                outcome.append(waiter(uow))
        except Exception as exc:  # the test reads what the waiter raised
            outcome.append(exc)

    with UnitOfWork(sessions, InMemorySender()) as uow:
        holder(uow)
        thread = threading.Thread(target=wait_then_decide)
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(engine):
            assert time.monotonic() < deadline, "the waiter never blocked on the run's lock"
            assert thread.is_alive(), f"the waiter ended without waiting: {outcome}"
            time.sleep(0.01)
    thread.join(timeout=10)
    assert not thread.is_alive()
    return outcome[0], sender


def test_an_approval_that_waited_for_the_same_approval_is_answered_with_its_record(
    run_id: str, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    got, sender = _while_held(
        engine,
        sessions,
        lambda uow: approve_plan(uow, run_id, approver="alice", now=NOW),
        lambda uow: approve_plan(uow, run_id, approver="alice", now=NOW),
    )
    assert isinstance(got, Decided), got
    recorded = (got.decision, got.approver, got.dispatched_at is not None)
    assert recorded == ("approved", "alice", True)
    assert sender.sent == [], "the first approval sent ApplyPatchST; the repeat sends nothing"
    with sessions() as s:
        status = s.execute(select(Run.status).where(Run.id == run_id)).scalar_one()
        rows = s.execute(select(PlanApproval.id).where(PlanApproval.run_id == run_id)).all()
    assert (status, len(rows)) == ("applying", 1)


@pytest.mark.parametrize(
    ("dispatch", "status_after"),
    [(True, "applying"), (False, "waiting_input")],
    ids=["dispatched", "beat-only"],
)
def test_a_rejection_that_waited_for_an_approval_is_refused(
    run_id: str,
    engine: Engine,
    sessions: sessionmaker[Session],
    dispatch: bool,
    status_after: str,
) -> None:
    """Dispatched, the approval moved the run (re-read: the plan's decision is read
    again); beat-only, it left the run waiting_input (the insert finds the decision)."""
    got, _ = _while_held(
        engine,
        sessions,
        lambda uow: approve_plan(uow, run_id, approver="alice", now=NOW, dispatch=dispatch),
        lambda uow: reject_plan(uow, run_id, approver="bob", now=NOW),
    )
    assert isinstance(got, Conflict), got
    assert "already approved" in got.message
    with sessions() as s:
        status = s.execute(select(Run.status).where(Run.id == run_id)).scalar_one()
    assert status == status_after


def test_an_approval_is_three_statements_the_gate_the_insert_and_the_move(
    run_id: str, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(" ".join(statement.split()))

    sender = InMemorySender()
    with UnitOfWork(sessions, sender) as uow:
        listen(engine, "before_cursor_execute", seen)
        try:
            approve_plan(uow, run_id, approver="alice", now=NOW)
        finally:
            remove(engine, "before_cursor_execute", seen)
    assert [s.split()[0] for s in statements] == ["SELECT", "INSERT", "UPDATE"], statements
    assert statements[0].endswith("FOR UPDATE OF runs")
    assert sender.sent == [RunStep(StepId.APPLY_PATCH, run_id)]


def test_the_submitter_may_not_approve_their_own_run_read_through_the_gate(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(Forbidden, match="self-approval"), UnitOfWork(sessions) as uow:
        approve_plan(uow, run_id, approver="sam", now=NOW)
    with UnitOfWork(sessions, InMemorySender()) as uow:  # unless the operator allows it
        approve_plan(uow, run_id, approver="sam", now=NOW, allow_self_approval=True)
