"""The call ledger on Postgres (``app.opencode_calls`` through LedgerRepo): one
transaction per method that writes, as the exactly-once protocol needs; a method that
runs one statement (a read, or a write that stands alone) runs it outside a
transaction, which Postgres commits as the one-statement transaction it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import direct
from shared.db.engine import engine_of
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.sessions_to_forget import ForgetRepo
from shared.domain.budget import Estimate
from shared.domain.call_record import AgedRecord
from shared.domain.step_lease import StepLease
from shared.domain.vocab import CallStatus
from shared.opencode.calls import (
    CallOutcome,
    StructuredCall,
    UnrecordedAnswers,
    finished_elsewhere,
)

log = structlog.get_logger("kodo.oc")


class PostgresCallLedger:
    """:class:`shared.opencode.ports.CallLedger` on the real database."""

    def __init__(self, sessions: sessionmaker[Session], estimate: Estimate | None = None) -> None:
        self.engine = engine_of(sessions)  # each method's statement runs alone on its pool
        self.estimate = estimate  # reserved on the run's budget by every won claim

    @contextmanager
    def _alone(self) -> Iterator[LedgerRepo]:
        """The ledger on a lone connection (:func:`shared.db.direct.alone`): each of its
        statements runs alone, a read or a write that is a whole change, never rolled
        back; Postgres commits a write on its own, durably, as the one-statement
        transaction it is, without the BEGIN and COMMIT round trips (each a quarter of a
        millisecond on a loaded machine) or a Session around it."""
        with direct.alone(self.engine) as lone:
            yield LedgerRepo(lone)

    def claim(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> bool:
        with self._alone() as ledger:
            return _claim_in(ledger, call, request, lease, self.estimate, session) is None

    def claim_or_read(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> tuple[bool, AgedRecord | None]:
        with self._alone() as ledger:
            found = _claim_in(ledger, call, request, lease, self.estimate, session)
            return found is None, found

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        lease: StepLease | None = None,
    ) -> bool:
        with self._alone() as ledger:
            return ledger.mark_started(op_key, session_id, daemon, holding=lease)

    def mark_sent(self, op_key: str) -> bool:
        with self._alone() as ledger:
            return ledger.mark_sent(op_key)

    def awaits_collection(self, op_key: str) -> bool:
        with self._alone() as ledger:
            return ledger.awaits_collection(op_key)

    def note_rejected(self, op_key: str, reason: str) -> None:
        with self._alone() as ledger:
            ledger.note_rejected(op_key, reason)

    def sessions_in_doubt(self, run_id: str, step_id: str) -> list[tuple[str, str | None]]:
        with self._alone() as ledger:
            return ledger.sessions_in_doubt(run_id, step_id)

    def read(self, op_key: str) -> AgedRecord | None:
        with self._alone() as ledger:
            return ledger.get_aged(op_key)

    def finish(
        self, op_key: str, outcome: CallOutcome, *, from_status: CallStatus = CallStatus.CLAIMED
    ) -> bool:
        with self._alone() as ledger:
            return _finish_in(ledger, op_key, outcome, from_status)

    def finish_unsent(self, op_key: str, outcome: CallOutcome) -> bool:
        with self._alone() as ledger:
            return ledger.finish_unsent(
                op_key,
                now=outcome.now,
                error_name=outcome.error_name or "Error",
                error=outcome.error or "",
            )

    def forget_later(
        self, session_id: str, daemon: str | None, directory: str, reason: str
    ) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                ForgetRepo(s).remember(session_id, daemon, directory, reason)
        except SQLAlchemyError as exc:  # the database away too: the session stays behind
            log.warning("oc.session_left", session_id=session_id, error=str(exc)[:200])


def _finish_in(
    ledger: LedgerRepo, op_key: str, outcome: CallOutcome, from_status: CallStatus
) -> bool:
    return ledger.finish(
        op_key,
        status=outcome.status,
        now=outcome.now,
        duration_ms=outcome.duration_ms,
        response=outcome.response,
        usage=outcome.usage,
        error_name=outcome.error_name,
        error=outcome.error,
        from_status=from_status,
    )


def record_answers_in(session: Session, unrecorded: UnrecordedAnswers) -> None:
    """Record the answers waiting in ``unrecorded`` in the caller's transaction (the one
    that records the step's outcome); call ``unrecorded.settle()`` once it commits.
    One another delivery recorded succeeded already is the same answer (one prompt per
    session); raises CallSuperseded if its call ended otherwise."""
    ledger = LedgerRepo(session)
    for answer in unrecorded.pending:
        if not _finish_in(ledger, answer.op_key, answer.outcome, CallStatus.SENT):
            finished_elsewhere(answer.op_key, ledger.get_aged(answer.op_key))


def _claim_in(
    ledger: LedgerRepo,
    call: StructuredCall,
    request: dict[str, Any],
    lease: StepLease | None,
    estimate: Estimate | None,
    session: tuple[str, str | None] | None = None,
) -> AgedRecord | None:
    """The claim (None: won; else the row that won before), with the step's lease held in
    the same statement (StepAbandoned: a cancelled or fenced-off delivery claims
    nothing) and, for a won claim, the call's estimate reserved on the run's budget
    (BudgetExceeded: nothing claimed, the call is never sent). The statement refuses
    itself, so it runs alone: one round trip, no BEGIN or COMMIT."""
    return ledger.claim(
        op_key=call.op_key,
        run_id=call.run_id,
        step_id=call.step_id,
        attempt=call.attempt,
        agent=call.agent,
        request=request,
        estimate=estimate,
        session=session,
        holding=lease,
        worktree=call.directory or None,
    )
