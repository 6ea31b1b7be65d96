"""A unit of work run alone (``UnitOfWork(alone=True)``), on real Postgres: no
transaction, each statement committed by Postgres as it returns, the outbox still sent
only once the unit ends without error.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import direct
from shared.domain.run_machine import StepId
from shared.service.messages import InMemorySender, RunStep
from shared.service.uow import UnitOfWork
from tests import factories

pytestmark = pytest.mark.integration

_RENAME = text("UPDATE app.intents SET goal = :goal WHERE id = :id")
_GOAL = text("SELECT goal FROM app.intents WHERE id = :id")


def _goal(sessions: sessionmaker[Session], intent_id: str) -> str:
    with sessions() as other:  # another connection: sees only what is committed
        found = other.execute(
            text("SELECT goal FROM app.intents WHERE id = :id"), {"id": intent_id}
        )
        return str(found.scalar_one())


def _intent(db: Session) -> str:
    run = factories.RunFactory()
    db.commit()
    return str(run.intent_id)


def test_each_statement_is_committed_as_it_returns_and_the_messages_leave_after(
    sessions: sessionmaker[Session], db: Session
) -> None:
    intent_id = _intent(db)
    sender = InMemorySender()
    wake = RunStep(StepId.COMPILE, "run-1")
    with UnitOfWork(sessions, sender, alone=True) as uow:
        direct.execute(uow.where, _RENAME, {"goal": "renamed alone", "id": intent_id})
        assert _goal(sessions, intent_id) == "renamed alone", "no COMMIT awaited"
        uow.send_after_commit(wake)
        assert sender.sent == [], "nothing leaves before the unit ends"
    assert sender.sent == [wake]


def test_an_error_drops_the_messages_and_keeps_what_was_written(
    sessions: sessionmaker[Session], db: Session
) -> None:
    """Alone is for units with nothing to roll back together: what a statement wrote
    stays, and the rows it left are what the reconciler re-sends from."""
    intent_id = _intent(db)
    sender = InMemorySender()
    uow = UnitOfWork(sessions, sender, alone=True)

    def refused() -> None:
        with uow:
            direct.execute(uow.where, _RENAME, {"goal": "kept", "id": intent_id})
            uow.send_after_commit(RunStep(StepId.COMPILE, "run-1"))
            raise LookupError("a later check refused")

    with pytest.raises(LookupError):
        refused()
    assert sender.sent == []
    assert _goal(sessions, intent_id) == "kept"


def test_a_transaction_unit_still_holds_its_writes_until_it_commits(
    sessions: sessionmaker[Session], db: Session
) -> None:
    intent_id = _intent(db)
    before = _goal(sessions, intent_id)
    with UnitOfWork(sessions, InMemorySender()) as uow:
        uow.session.execute(_RENAME, {"goal": "in a transaction", "id": intent_id})
        assert _goal(sessions, intent_id) == before
    assert _goal(sessions, intent_id) == "in a transaction"
