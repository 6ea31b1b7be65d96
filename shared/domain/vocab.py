"""The stored vocabularies besides the run's status: what a ledger call, a step's
checkpoint, an approval decision and an artifact may say.

Each is an enum; the database checks the same values (``shared.db.models`` builds
its CHECK constraints from these), and a schema test compares the two.
"""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    """A provider call's row in the ledger (``app.opencode_calls.status``)."""

    CLAIMED = "claimed"  # the op_key is taken; the call is in flight (or its worker died)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # the session was aborted after OC_TIMEOUT_MS
    ABORTED = "aborted"
    UNKNOWN = "unknown"  # claimed, never recorded: declared by a delivery that waited it out
    SUCCEEDED_LATE = "succeeded_late"  # answered (and paid) after it was declared unknown
    FAILED_LATE = "failed_late"  # failed after it was declared unknown
    SENT = "sent"  # prompted with prompt_async; the answer is collected when the session ends

    @property
    def is_late(self) -> bool:
        """Recorded by the claimant after another delivery declared the call unknown:
        the run went on without it, so it reads back as unknown (never as an answer)."""
        return self in LATE


LATE = frozenset({CallStatus.SUCCEEDED_LATE, CallStatus.FAILED_LATE})

NEVER_SENT = "NeverSent"
NEVER_SENT_ERROR = "claimed but never sent: the calling worker stopped before its prompt left"
"""A claim with no session whose claimant is gone: its prompt never left (each leaves only
after its session is recorded on its still-claimed row), so it is recorded failed at no
cost. Worded once, as UNKNOWN_ERROR is: the next attempt's prompt quotes it."""

CUT_SHORT_STATUSES = frozenset({CallStatus.TIMED_OUT, CallStatus.ABORTED})
CUT_SHORT_ERRORS = frozenset({"DaemonLost", "SessionLost", "TurnLost"})
CUT_SHORT_LATE_ERRORS = frozenset({"OpenCodeTimeout", "OpenCodeAborted"})
"""A final call with a session whose turn was cut short: timed out or aborted (a
``failed_late`` one carries the error names of those), or failed because its daemon
died or restarted under it or the connection broke after the prompt left. The daemon's
totals miss the step it was in, so the settle (``app.settle_call``, migrations 0027 and
0032) spends that step again (the turn's last counted one) and at least the call's
reservation."""


class StepRunStatus(StrEnum):
    """A step's checkpoint (``app.step_runs.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Decision(StrEnum):
    """A human's decision on one plan digest (``app.plan_approvals.decision``)."""

    APPROVED = "approved"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"  # the plan goes back to CompileST, with a comment


class ArtifactKind(StrEnum):
    """What a stored artifact is (``app.artifacts.kind``)."""

    PLAN_CARD = "plan_card"  # plan.json, the exact bytes the approver's digest is over
    PATCH = "patch"
    DECISION = "decision"
    COMMAND_OUTPUT = "command_output"
    DIAGNOSTIC = "diagnostic"


def values(vocabulary: type[StrEnum]) -> tuple[str, ...]:
    """The stored spellings, in declaration order (for CHECK constraints)."""
    return tuple(member.value for member in vocabulary)
