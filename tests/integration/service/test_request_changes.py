"""Request changes on real Postgres: what the command commits, refuses and sends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import PlanApproval, Run, StepRun
from shared.db.repos.snapshots import run_snapshot
from shared.db.repos.steps import ArtifactRepo
from shared.domain.rounds import ChangeRequest
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.errors import Conflict, InvalidInput
from shared.hashing import sha256_hex
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import approve_plan, reject_plan, request_changes
from shared.service.uow import UnitOfWork
from tests.factories import OpenCodeCallFactory, RunFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMPILE = StepId.COMPILE
PLAN = b'{"design":"first","files":[],"risks":[],"tests":[]}'


@pytest.fixture
def run_id(db: Session) -> str:
    """A run waiting on the approval of its first plan, compiled in two attempts."""
    run = RunFactory(waiting_input=True, plan_sha256=sha256_hex(PLAN))
    db.add(
        StepRun(
            run_id=run.id,
            step_id=COMPILE.value,
            status="succeeded",
            started_at=NOW,
            finished_at=NOW,
            output={"plan_sha256": run.plan_sha256},
            fence=3,
        )
    )
    OpenCodeCallFactory(run=run, attempt=1, status="succeeded")
    OpenCodeCallFactory(run=run, attempt=2, status="succeeded")
    ArtifactRepo(db).put(
        run.id,
        COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=PLAN,
        media_type="application/json",
    )
    db.commit()
    found: str = run.id
    return found


def ask(
    sessions: sessionmaker[Session],
    run_id: str,
    *,
    comment: str | None = "Split the change in two files.",
    max_revisions: int = 5,
    sender: InMemorySender | None = None,
    plan_sha256: str | None = None,
) -> int:
    with UnitOfWork(sessions, sender or InMemorySender()) as uow:
        return request_changes(
            uow,
            run_id,
            approver="rita",
            comment=comment,
            now=NOW,
            max_revisions=max_revisions,
            lease_s=30,
            plan_sha256=plan_sha256,
        ).revision


def compile_row(sessions: sessionmaker[Session], run_id: str) -> StepRun:
    with sessions() as s:
        return s.execute(
            select(StepRun).where(StepRun.run_id == run_id, StepRun.step_id == COMPILE.value)
        ).scalar_one()


def test_a_request_records_the_decision_starts_compile_round_two_and_sends_it_after_commit(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()

    assert ask(sessions, run_id, sender=sender) == 2

    assert sender.sent == [RunStep(COMPILE, run_id)]
    with sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert (run.status, run.next_action, run.plan_sha256) == (
            "compiling",
            "run:CompileST",
            sha256_hex(PLAN),
        ), "the run keeps the digest of the plan being revised until the revision lands"
        [decision] = s.execute(select(PlanApproval)).scalars()
        assert (decision.decision, decision.approver, decision.approved_at) == (
            "changes_requested",
            "rita",
            None,
        )
    row = compile_row(sessions, run_id)
    assert (row.status, row.round, row.attempt_base, row.deliveries, row.fence) == (
        "running",
        2,
        2,
        0,
        4,
    ), "a fresh round: attempts follow the ledger's last, a new fence, no delivery yet"
    assert row.output is None
    assert row.lease_owner == "reconciler"
    request = ChangeRequest.from_json(row.round_input)
    assert request == ChangeRequest(
        revision=2,
        comment="Split the change in two files.",
        requested_by="rita",
        previous_plan_sha256=sha256_hex(PLAN),
        earlier_plans=(sha256_hex(PLAN),),
    )


def test_the_step_sees_its_round_and_the_plan_it_revises(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    ask(sessions, run_id)
    with sessions() as s:
        snapshot = run_snapshot(s, run_id, COMPILE)
    assert snapshot is not None
    assert (snapshot.round, snapshot.attempt_base) == (2, 2)
    assert snapshot.round_input is not None
    assert snapshot.round_input["revision"] == 2
    assert snapshot.plan == {"design": "first", "files": [], "risks": [], "tests": []}


def test_the_plan_sent_back_can_be_neither_approved_nor_rejected(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    ask(sessions, run_id)
    sender = InMemorySender()
    with (
        pytest.raises(Conflict, match="changes were requested"),
        UnitOfWork(sessions, sender) as uow,
    ):
        approve_plan(uow, run_id, approver="alice", now=NOW, plan_sha256=sha256_hex(PLAN))
    with (
        pytest.raises(Conflict, match="changes were requested"),
        UnitOfWork(sessions, sender) as uow,
    ):
        reject_plan(uow, run_id, approver="alice", now=NOW)
    assert sender.sent == []


def test_a_repeated_request_is_accepted_and_starts_nothing(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    ask(sessions, run_id, sender=sender)
    assert ask(sessions, run_id, sender=sender) == 2
    assert sender.sent == [RunStep(COMPILE, run_id)]
    assert compile_row(sessions, run_id).round == 2


def test_a_second_request_with_another_comment_is_refused_not_dropped(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    """Accepted with 200, the second reviewer's comment reached nobody (red-team
    helper-97): it is refused, naming who asked first."""
    sender = InMemorySender()
    ask(sessions, run_id, sender=sender)
    with pytest.raises(Conflict, match="yours was not sent") as refused:
        ask(sessions, run_id, comment="Also rename the module.", sender=sender)
    assert refused.value.details == {"rule": ["decision_recorded"], "approver": ["rita"]}
    assert sender.sent == [RunStep(COMPILE, run_id)]


def test_past_the_revision_limit_the_request_is_a_conflict_naming_the_rule(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    sender = InMemorySender()
    with pytest.raises(Conflict, match="revision_limit") as refused:
        ask(sessions, run_id, max_revisions=1, sender=sender)
    assert refused.value.details == {"rule": ["revision_limit"], "revisions": [1]}
    assert sender.sent == []
    assert compile_row(sessions, run_id).round == 1
    with sessions() as s:
        assert s.execute(select(PlanApproval)).first() is None


@pytest.mark.parametrize("comment", [None, "", "   ", "x" * 4001])
def test_a_request_without_a_usable_comment_is_refused(
    run_id: str, sessions: sessionmaker[Session], comment: str | None
) -> None:
    with pytest.raises(InvalidInput):
        ask(sessions, run_id, comment=comment)
    assert compile_row(sessions, run_id).round == 1


def test_a_request_naming_another_digest_is_a_conflict(
    run_id: str, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(Conflict, match="plan changed"):
        ask(sessions, run_id, plan_sha256="0" * 64)


def test_a_run_not_waiting_for_approval_cannot_be_sent_back(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(status="applying", plan_sha256=sha256_hex(PLAN))
    db.commit()
    with pytest.raises(Conflict, match="not waiting_input"):
        ask(sessions, run.id)
