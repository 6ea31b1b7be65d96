"""A provider call's ledger row as the call protocol reads it back.

Pure data: the ledger adapter builds it from ``app.opencode_calls``, and so does the
step's snapshot for the call the step is parked on (read with the lease, so the
delivery the collector woke needs no transaction of its own to learn it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.domain.vocab import CallStatus

ABORT_UNCONFIRMED = "its abort was never confirmed: the turn may still be running"
"""What the error of a call recorded ended adds when the daemon never confirmed its
abort (an overdue call's, a cancelled run's)."""


@dataclass(frozen=True)
class CallRecord:
    """One ledger row as the call protocol reads it back."""

    op_key: str
    status: str
    response: dict[str, Any] | None
    usage: dict[str, Any] | None
    error_name: str | None
    error: str | None
    rejected: str | None = None  # why kodo did not use a succeeded answer
    session_id: str | None = None
    woken: bool = False  # a sent call whose session the collector saw end
    daemon: str | None = None  # the base URL of the daemon holding its session


AgedRecord = tuple[CallRecord, float]
"""A row and its age in seconds (since claimed or sent) by the database's clock; 0 for
a row that is no longer live (claimed or sent)."""


@dataclass(frozen=True)
class StepLedger:
    """What a step's delivery read of its calls in the transaction that took its lease.

    ``parked``: the call the step was parked on (a wake-up's delivery collects it from
    this row, with no claim of its own). ``last_attempt``: the step's highest attempt
    in the ledger, any round (0: none); a call of a later attempt cannot be recorded
    yet, so its session is made before its claim and recorded with it.
    """

    parked: AgedRecord | None = None
    last_attempt: int = 0

    def parked_row(self, op_key: str) -> AgedRecord | None:
        """The parked call's row if it is ``op_key``'s."""
        return self.parked if self.parked is not None and self.parked[0].op_key == op_key else None

    def is_new(self, attempt: int) -> bool:
        return attempt > self.last_attempt


def aged(record: CallRecord, age: float) -> AgedRecord:
    """``record`` with its age, counted only while the call is live."""
    live = record.status in (CallStatus.CLAIMED, CallStatus.SENT)
    return record, age if live else 0.0
