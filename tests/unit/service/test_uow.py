"""The unit of work sends its outbox only after its transaction commits.

No database: a session bound to nothing opens no connection until a query runs, and
SQLAlchemy's ``after_commit``/``after_rollback`` events say when the transaction ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from shared.domain.run_machine import StepId
from shared.service.messages import AbortCalls, InMemorySender, Message, RunStep
from shared.service.uow import UnitOfWork


@dataclass
class Journal:
    """What happened, in order: the transaction's end and every send."""

    events: list[str] = field(default_factory=list)


@dataclass
class JournalSender:
    journal: Journal
    fail_on: set[Message] = field(default_factory=set)

    def send(self, message: Message) -> None:
        if message in self.fail_on:
            raise ConnectionError("the broker is away")
        self.journal.events.append(f"send {message!r}")


def journaled_sessions(journal: Journal) -> sessionmaker[Session]:
    sessions = sessionmaker()
    event.listen(sessions, "after_commit", lambda _s: journal.events.append("commit"))
    event.listen(sessions, "after_rollback", lambda _s: journal.events.append("rollback"))
    return sessions


APPLY = RunStep(StepId.APPLY_PATCH, "run-1")
ABORT = AbortCalls("run-2")


def test_messages_are_sent_after_the_commit_in_the_order_they_were_added() -> None:
    journal = Journal()
    with UnitOfWork(journaled_sessions(journal), JournalSender(journal)) as uow:
        uow.send_after_commit(APPLY)
        uow.send_after_commit(ABORT)
        assert journal.events == [], "nothing leaves before the commit"
        assert uow.pending == (APPLY, ABORT)
    assert journal.events == ["commit", f"send {APPLY!r}", f"send {ABORT!r}"]
    assert uow.sent == [APPLY, ABORT]
    assert uow.unsent == []


def test_a_rollback_drops_the_messages() -> None:
    journal = Journal()
    sender = InMemorySender()
    uow = UnitOfWork(journaled_sessions(journal), sender)

    def refuse() -> None:
        with uow:
            uow.send_after_commit(APPLY)
            raise LookupError("the command refused")

    with pytest.raises(LookupError):
        refuse()
    assert journal.events == ["rollback"]
    assert sender.sent == []
    assert uow.sent == []


def test_a_failed_send_after_the_commit_keeps_the_commit_and_sends_the_rest() -> None:
    journal = Journal()
    sender = JournalSender(journal, fail_on={APPLY})
    with UnitOfWork(journaled_sessions(journal), sender) as uow:
        uow.send_after_commit(APPLY)
        uow.send_after_commit(ABORT)
    assert journal.events == ["commit", f"send {ABORT!r}"], "no rollback after the commit"
    assert uow.unsent == [APPLY], "kept for the log: the watcher and reconciler re-send"
    assert uow.sent == [ABORT]


def test_a_unit_of_work_without_a_sender_refuses_a_message_before_the_commit() -> None:
    journal = Journal()
    with (
        pytest.raises(RuntimeError, match="no sender"),
        UnitOfWork(journaled_sessions(journal)) as uow,
    ):
        uow.send_after_commit(APPLY)
    assert journal.events == ["rollback"]


def test_a_unit_of_work_is_used_once() -> None:
    uow = UnitOfWork(sessionmaker(), InMemorySender())
    with uow:
        pass
    with pytest.raises(RuntimeError, match="used once"), uow:
        pass


def test_a_message_outside_the_transaction_is_refused() -> None:
    uow = UnitOfWork(sessionmaker(), InMemorySender())
    with pytest.raises(RuntimeError, match="not open"):
        uow.send_after_commit(APPLY)
