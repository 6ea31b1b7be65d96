"""One unit of work: a transaction, its repositories and an after-commit outbox.

A command adds the messages it wants sent (:meth:`UnitOfWork.send_after_commit`);
they leave only after the transaction commits, so a worker never races ahead of the
row it will read, and a rollback drops them with everything else. Entry points (the
request, the task, the CLI command) open the unit of work; commands never commit.

A message whose send fails after the commit is logged (``outbox.send_failed``) and
kept in :attr:`UnitOfWork.unsent`; the committed state stands. Postgres is the source
of truth and Redis a transport that may lose messages anyway: the approval watcher
and the reconciler re-send from the rows (an approved run never moved, a step never
entered), so a lost send delays a run but never loses it.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType

import structlog
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shared.db import direct
from shared.db.engine import engine_of
from shared.db.repos.approvals import ApprovalRepo
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.runs import IntentRepo, RunRepo
from shared.db.repos.steps import ArtifactRepo, StepRunRepo
from shared.db.repos.tokens import TokenRepo, UiSessionRepo
from shared.service.messages import Message, Sender

log = structlog.get_logger("kodo.outbox")


class UnitOfWork:
    """``with UnitOfWork(sessions, sender) as uow:`` one transaction, committed on success."""

    # The repositories, bound to the transaction's session once it is entered.
    intents: IntentRepo
    runs: RunRepo
    approvals: ApprovalRepo
    steps: StepRunRepo
    ledger: LedgerRepo
    tokens: TokenRepo
    ui_sessions: UiSessionRepo

    def __init__(
        self, sessions: sessionmaker[Session], sender: Sender | None = None, *, alone: bool = False
    ) -> None:
        """``sender`` may be left out by entry points whose commands send nothing (tokens).

        ``alone``: no transaction and no Session; each statement runs alone on a pooled
        connection (:func:`shared.db.direct.alone`) and commits on its own, as the
        one-statement transaction Postgres runs it in, without the BEGIN and COMMIT round
        trips. Only for a unit whose statements never need rolling back together: one
        statement, or reads after one write, each prebuilt (the ledger's and the steps'
        repositories, :attr:`where`). Its messages are sent as a transaction's are, once
        the unit ends without error (an error drops them, though what was written before
        it stays: the rows it left are what the reconciler re-sends from).
        """
        self._sessions = sessions
        self._sender = sender
        self._alone = alone
        self._outbox: list[Message] = []
        self._where: direct.Where | None = None
        self._held = ExitStack()
        self._tx: SessionTransaction | None = None
        self.sent: list[Message] = []
        self.unsent: list[Message] = []

    def __enter__(self) -> UnitOfWork:
        if self._where is not None:
            raise RuntimeError("a unit of work is used once: open a new one")
        if self._alone:
            lone = self._held.enter_context(direct.alone(engine_of(self._sessions)))
            self._where = lone
            self.steps = StepRunRepo(lone)
            self.ledger = LedgerRepo(lone)
            return self
        s = self._held.enter_context(self._sessions())
        self._where = s
        self._tx = s.begin()
        self.intents = IntentRepo(s)
        self.runs = RunRepo(s)
        self.approvals = ApprovalRepo(s)
        self.steps = StepRunRepo(s)
        self.artifacts = ArtifactRepo(s)
        self.ledger = LedgerRepo(s)
        self.tokens = TokenRepo(s)
        self.ui_sessions = UiSessionRepo(s)
        return self

    @property
    def where(self) -> direct.Where:
        """Where the unit's prebuilt statements run: its session, or its lone connection."""
        if self._where is None:
            raise RuntimeError("the unit of work is not open")
        return self._where

    @property
    def session(self) -> Session:
        """The transaction's session, for repositories not listed here (none alone)."""
        return direct.session_of(self.where)

    def send_after_commit(self, message: Message) -> None:
        """Queue ``message``; it is sent once the transaction commits, or dropped."""
        if self._where is None:
            raise RuntimeError("the unit of work is not open")
        if self._sender is None:
            raise RuntimeError(f"this unit of work has no sender, so it cannot send {message!r}")
        self._outbox.append(message)

    @property
    def pending(self) -> tuple[Message, ...]:
        """What will be sent if the transaction commits."""
        return tuple(self._outbox)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        outbox, self._outbox = self._outbox, []
        with self._held:  # the session closed, or the lone connection back in the pool
            if tx is not None:
                if exc_type is None:
                    tx.commit()
                else:
                    tx.rollback()
        if exc_type is None:
            self._send(outbox)

    def _send(self, outbox: list[Message]) -> None:
        if self._sender is None:
            return
        for message in outbox:
            try:
                self._sender.send(message)
            except Exception as error:
                self.unsent.append(message)
                log.warning(
                    "outbox.send_failed",
                    message=repr(message),
                    error=f"{type(error).__name__}: {error}",
                    rule="sent after commit; the watcher and reconciler re-send from the rows",
                )
            else:
                self.sent.append(message)
