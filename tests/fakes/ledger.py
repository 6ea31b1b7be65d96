"""An in-memory call ledger: the :class:`shared.opencode.ports.CallLedger` fake.

It keeps the rules the real ledger keeps (a key is claimed once; a row is finished
only from the status the caller names) and holds leases like the real claim: a lease
named in ``abandoned`` raises StepAbandoned and claims nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shared.domain.call_record import CallRecord
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallOutcome, StructuredCall


@dataclass
class LedgerRow:
    record: CallRecord
    attempt: int
    request: dict[str, Any]
    session_id: str | None = None
    age_s: float = 0.0
    step: tuple[str, str] = ("", "")  # (run_id, step_id)
    daemon: str | None = None
    woken: bool = False


@dataclass
class InMemoryLedger:
    rows: dict[str, LedgerRow] = field(default_factory=dict)
    abandoned: dict[StepLease, str] = field(default_factory=dict)  # lease -> why it is lost
    leases_held: list[StepLease] = field(default_factory=list)
    # sessions whose delete failed: (session id, daemon, directory, reason)
    to_forget: list[tuple[str, str | None, str, str]] = field(default_factory=list)

    def claim(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> bool:
        if lease is not None:
            if lease in self.abandoned:
                raise StepAbandoned(self.abandoned[lease])
            self.leases_held.append(lease)
        if call.op_key in self.rows:
            return False
        record = CallRecord(call.op_key, CallStatus.CLAIMED, None, None, None, None)
        self.rows[call.op_key] = LedgerRow(
            record, call.attempt, request, step=(call.run_id, call.step_id)
        )
        if session is not None:  # made before the claim: recorded with it
            self.rows[call.op_key].session_id, self.rows[call.op_key].daemon = session
        return True

    def claim_or_read(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> tuple[bool, tuple[CallRecord, float] | None]:
        won = self.claim(call, request, lease=lease, session=session)
        return won, None if won else self.read(call.op_key)

    def claimed_elsewhere(
        self, call: StructuredCall, age_s: float, session_id: str | None = None
    ) -> None:
        """A row another worker claimed ``age_s`` ago (by the ledger's clock), not yet
        finished (``session_id``: the session it recorded, its prompt maybe sent)."""
        record = CallRecord(call.op_key, CallStatus.CLAIMED, None, None, None, None)
        self.rows[call.op_key] = LedgerRow(
            record,
            call.attempt,
            {},
            session_id=session_id,
            age_s=age_s,
            step=(call.run_id, call.step_id),
        )

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        lease: StepLease | None = None,
    ) -> bool:
        if lease is not None:
            if lease in self.abandoned:
                raise StepAbandoned(self.abandoned[lease])
            self.leases_held.append(lease)
        row = self.rows[op_key]
        if row.record.status != CallStatus.CLAIMED:
            return False
        row.session_id = session_id
        row.daemon = daemon
        return True

    def mark_sent(self, op_key: str) -> bool:
        row = self.rows[op_key]
        if row.record.status != CallStatus.CLAIMED:
            return False
        row.record = replace(row.record, status=CallStatus.SENT)
        return True

    def wake(self, session_id: str, error: str | None = None) -> None:
        """What the collector records when it sees the session end (``error``: it saw
        ``session.error`` saying so)."""
        for row in self.rows.values():
            if row.session_id == session_id and row.record.status in (
                CallStatus.CLAIMED,
                CallStatus.SENT,
            ):
                row.woken = True
                if error is not None:
                    row.record = replace(row.record, error=error)

    def awaits_collection(self, op_key: str) -> bool:
        row = self.rows[op_key]
        return row.record.status in (CallStatus.CLAIMED, CallStatus.SENT) and not row.woken

    def read(self, op_key: str) -> tuple[CallRecord, float] | None:
        row = self.rows.get(op_key)
        if row is None:
            return None
        record = replace(row.record, session_id=row.session_id, woken=row.woken, daemon=row.daemon)
        return record, row.age_s

    def finish(
        self, op_key: str, outcome: CallOutcome, *, from_status: CallStatus = CallStatus.CLAIMED
    ) -> bool:
        row = self.rows.get(op_key)
        if row is None or row.record.status != from_status:
            return False
        row.record = replace(
            row.record,
            status=outcome.status,
            response=outcome.response,
            usage=outcome.usage,
            error_name=outcome.error_name,
            error=outcome.error,
        )
        return True

    def finish_unsent(self, op_key: str, outcome: CallOutcome) -> bool:
        row = self.rows.get(op_key)
        if row is None or row.session_id is not None:
            return False
        return self.finish(op_key, outcome)

    def sessions_in_doubt(self, run_id: str, step_id: str) -> list[tuple[str, str | None]]:
        doubtful = (CallStatus.CLAIMED, CallStatus.SENT, CallStatus.UNKNOWN, CallStatus.TIMED_OUT)
        return [
            (row.session_id, row.daemon)
            for row in self.rows.values()
            if row.step == (run_id, step_id)
            and row.record.status in doubtful
            and row.session_id is not None
        ]

    def forget_later(
        self, session_id: str, daemon: str | None, directory: str, reason: str
    ) -> None:
        self.to_forget.append((session_id, daemon, directory, reason))

    def note_rejected(self, op_key: str, reason: str) -> None:
        row = self.rows[op_key]
        if row.record.status == CallStatus.SUCCEEDED and row.record.rejected is None:
            row.record = replace(row.record, rejected=reason)

    def status(self, op_key: str) -> str:
        return self.rows[op_key].record.status
