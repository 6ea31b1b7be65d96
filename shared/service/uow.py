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

from types import TracebackType

import structlog
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shared.db.engine import run_alone
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

        ``alone``: no transaction; each statement commits on its own (AUTOCOMMIT), as the
        one-statement transaction Postgres runs it in, without the BEGIN and COMMIT round
        trips. Only for a unit whose statements never need rolling back together: one
        statement, or reads after one write. Its messages are sent as a transaction's
        are, once the unit ends without error (an error drops them, though what was
        written before it stays: the rows it left are what the reconciler re-sends from).
        """
        self._sessions = sessions
        self._sender = sender
        self._alone = alone
        self._outbox: list[Message] = []
        self._session: Session | None = None
        self._tx: SessionTransaction | None = None
        self.sent: list[Message] = []
        self.unsent: list[Message] = []

    def __enter__(self) -> UnitOfWork:
        if self._session is not None:
            raise RuntimeError("a unit of work is used once: open a new one")
        self._session = self._sessions()
        s = self._session
        if self._alone:
            run_alone(s)
        else:
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
    def session(self) -> Session:
        """The transaction's session, for repositories not listed here."""
        if self._session is None:
            raise RuntimeError("the unit of work is not open")
        return self._session

    def send_after_commit(self, message: Message) -> None:
        """Queue ``message``; it is sent once the transaction commits, or dropped."""
        if self._session is None:
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
        session, tx = self.session, self._tx
        outbox, self._outbox = self._outbox, []
        try:
            if tx is not None:
                if exc_type is None:
                    tx.commit()
                else:
                    tx.rollback()
        finally:
            session.close()
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
