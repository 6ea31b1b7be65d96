"""The run commands on real Postgres: what each one commits, and what it sends after."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.event import listen, remove
from sqlalchemy.orm import Session, sessionmaker

from devstack.sample_repo import create_sample_repo
from shared.db.models import Intent, PlanApproval, Run
from shared.domain.run_machine import StepId
from shared.errors import Conflict
from shared.service.messages import AbortCalls, InMemorySender, Message, RunStep
from shared.service.recovery import redispatch_stalled
from shared.service.runs import (
    approve_plan,
    cancel_run,
    dispatch_approved,
    reject_plan,
    start_run,
    submit_intent,
)
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APPLY = StepId.APPLY_PATCH


@dataclass
class StatusAtSend:
    """Reads the run's committed status in its own session whenever a message leaves."""

    sessions: sessionmaker[Session]
    seen: list[tuple[Message, str | None]] = field(default_factory=list)

    def send(self, message: Message) -> None:
        with self.sessions() as s:
            status = s.execute(select(Run.status).where(Run.id == message.run_id)).scalar()
        self.seen.append((message, status))


class BrokerAway:
    def send(self, message: Message) -> None:
        raise ConnectionError(f"the broker is away: {message!r} not sent")


@pytest.fixture
def run_id(db: Session) -> str:
    """A run waiting for its plan's approval."""
    run = RunFactory(waiting_input=True)
    db.commit()
    waiting: str = run.id
    return waiting


def run_status(sessions: sessionmaker[Session], run_id: str) -> str:
    with sessions() as s:
        status: str = s.execute(select(Run.status).where(Run.id == run_id)).scalar_one()
        return status


def approvals(sessions: sessionmaker[Session], run_id: str) -> list[PlanApproval]:
    with sessions() as s:
        return list(s.execute(select(PlanApproval).where(PlanApproval.run_id == run_id)).scalars())


def test_submit_then_start_sends_the_first_step_once_and_a_repeat_sends_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    with UnitOfWork(sessions) as uow:  # no sender: submitting sends nothing
        intent = submit_intent(
            uow, repo=repo, goal="Add multiply", base_ref="HEAD", submitted_by="t"
        )
    sender = InMemorySender()
    for _ in range(2):
        with UnitOfWork(sessions, sender) as uow:
            start_run(uow, intent.id, app_version="test", now=NOW)
    assert sender.sent == [RunStep(StepId.COMPILE, intent.id)]
    assert run_status(sessions, intent.id) == "compiling"


def test_a_submitted_intent_has_its_database_time_from_the_insert_alone(
    sessions: sessionmaker[Session], engine: Engine, tmp_path: Path
) -> None:
    """created_at is the server's default, read back by the INSERT's RETURNING: no
    SELECT of the intent follows it (POST /intents answers with that time)."""
    repo = create_sample_repo(tmp_path / "calc")
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(" ".join(statement.split()))

    with UnitOfWork(sessions) as uow:
        listen(engine, "before_cursor_execute", seen)
        try:
            intent = submit_intent(
                uow, repo=repo, goal="Add multiply", base_ref="HEAD", submitted_by="t"
            )
        finally:
            remove(engine, "before_cursor_execute", seen)
        assert intent.created_at is not None
        stamped = intent.created_at
    assert [s.split()[0] for s in statements] == ["INSERT"], statements
    assert "RETURNING" in statements[0]
    with sessions() as s:
        stored = s.execute(select(Intent.created_at).where(Intent.id == intent.id)).scalar_one()
    assert stored == stamped


def test_approve_sends_exactly_one_apply_after_its_commit(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = StatusAtSend(sessions)
    with UnitOfWork(sessions, sender) as uow:
        approve_plan(uow, run_id, approver="alice", now=NOW)
        assert sender.seen == [], "nothing leaves inside the transaction"
    assert sender.seen == [(RunStep(APPLY, run_id), "applying")], "the worker finds the row moved"
    [row] = approvals(sessions, run_id)
    assert (row.decision, row.dispatched_at is not None) == ("approved", True)
    with UnitOfWork(sessions, sender) as uow:  # the same decision again
        approve_plan(uow, run_id, approver="alice", now=NOW)
    assert len(sender.seen) == 1, "a repeated approval sends nothing new"


def test_repeating_an_approval_recorded_without_dispatch_dispatches_it_once(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    with UnitOfWork(sessions, sender) as uow:  # the beat-only path: recorded, not moved
        approve_plan(uow, run_id, approver="alice", now=NOW, dispatch=False)
    assert sender.sent == []
    assert run_status(sessions, run_id) == "waiting_input"
    with UnitOfWork(sessions, sender) as uow:
        approve_plan(uow, run_id, approver="alice", now=NOW)
    assert sender.sent == [RunStep(APPLY, run_id)]
    assert run_status(sessions, run_id) == "applying"
    [row] = approvals(sessions, run_id)
    assert row.dispatched_at is not None


def test_a_rolled_back_approve_sends_nothing_and_records_nothing(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    pending: list[tuple[Message, ...]] = []

    def approve_then_fail() -> None:
        with UnitOfWork(sessions, sender) as uow:
            approve_plan(uow, run_id, approver="alice", now=NOW)
            pending.append(uow.pending)
            raise RuntimeError("the request failed after the command")

    with pytest.raises(RuntimeError, match="the request failed"):
        approve_then_fail()
    assert pending == [(RunStep(APPLY, run_id),)]
    assert sender.sent == []
    assert approvals(sessions, run_id) == []
    assert run_status(sessions, run_id) == "waiting_input"


def test_reject_ends_the_run_and_sends_nothing(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    with UnitOfWork(sessions, sender) as uow:
        reject_plan(uow, run_id, approver="bob", now=NOW)
    assert sender.sent == []
    assert run_status(sessions, run_id) == "rejected"
    with pytest.raises(Conflict, match="already rejected"), UnitOfWork(sessions, sender) as uow:
        approve_plan(uow, run_id, approver="alice", now=NOW)
    assert sender.sent == []


def test_cancel_sends_one_abort_and_a_second_cancel_sends_nothing(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = StatusAtSend(sessions)
    for _ in range(2):
        with UnitOfWork(sessions, sender) as uow:
            cancel_run(uow, run_id, now=NOW)
    assert sender.seen == [(AbortCalls(run_id), "cancelled")]


def test_an_approval_recorded_without_a_dispatch_is_sent_once_by_the_watcher(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    with UnitOfWork(sessions, sender) as uow:
        approve_plan(uow, run_id, approver="alice", now=NOW, dispatch=False)
    assert (sender.sent, run_status(sessions, run_id)) == ([], "waiting_input")
    for _ in range(2):  # two watcher passes
        with UnitOfWork(sessions, sender) as uow:
            dispatch_approved(uow, now=NOW)
    assert sender.sent == [RunStep(APPLY, run_id)]
    assert run_status(sessions, run_id) == "applying"


def test_a_send_that_fails_after_commit_keeps_the_approval_and_the_reconciler_resends(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    with UnitOfWork(sessions, BrokerAway()) as uow:
        approve_plan(uow, run_id, approver="alice", now=NOW)
    assert uow.unsent == [RunStep(APPLY, run_id)]
    assert run_status(sessions, run_id) == "applying", "the commit stands"
    sender = InMemorySender()
    with UnitOfWork(sessions, sender) as uow:  # the reconciler's pass, a while later
        later = datetime.now(UTC) + timedelta(minutes=5)
        found = redispatch_stalled(uow, now=later, redispatch_after_s=60)
    assert [(r.run_id, r.reason) for r in found] == [(run_id, "never entered")]
    assert sender.sent == [RunStep(APPLY, run_id)]
