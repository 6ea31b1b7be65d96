"""One structured prompt of one step attempt, its answer, and how it can fail (pure types).

The step side (the attempt loop) and the call protocol (:mod:`shared.opencode.exactly_once`)
both speak these; neither the daemon nor the ledger is reached from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from shared.domain.call_record import AgedRecord
from shared.domain.storable import storable_text
from shared.domain.vocab import CallStatus
from shared.hashing import op_key as make_op_key
from shared.hashing import sha256_hex

CacheLevel = Literal["miss", "l1", "l2"]
FailureKind = Literal[
    "contract", "timeout", "transient", "permanent", "config", "unknown", "refused"
]
"""``refused``: the turn broke a containment rule (a path outside the worktree): the agent
gets no other try."""


@dataclass(frozen=True)
class StructuredCall:
    """One structured prompt of one step attempt; its fields make the op_key."""

    run_id: str
    step_id: str
    attempt: int
    agent: str
    prompt: str
    schema: dict[str, Any]
    directory: str

    @cached_property
    def op_key(self) -> str:
        """Computed once: the call protocol asks for it at every stage of the call (a
        canonical JSON of the schema and a sha256 each time cost ~2% of a worker's CPU).
        The fields are frozen; the schema is a module constant, never mutated."""
        return make_op_key(self.run_id, self.step_id, self.attempt, self.prompt, self.schema)


@dataclass(frozen=True)
class StructuredResult:
    op_key: str
    answer: dict[str, Any]
    cache: CacheLevel
    usage: dict[str, Any]
    rejected: str | None = None  # an earlier delivery did not use this answer: why


@dataclass(frozen=True)
class UnrecordedAnswer:
    """A sent call's answer this delivery collected and judged good, its row still ``sent``."""

    op_key: str
    outcome: CallOutcome
    settle: Callable[[], None]  # once recorded: cache the answer, delete the session


@dataclass
class UnrecordedAnswers:
    """The answers one delivery collected but has not yet written to the ledger.

    A step whose answer is followed only by judging (no git, no other IO) records it in
    the transaction that records the step's outcome: one transaction less per call.
    Nothing is lost if the worker dies first: the row is still ``sent`` and its session
    is kept (deleted only by ``settle``, after the commit), so the next delivery
    collects the same answer again, unpaid. Any other write of the delivery (a verdict,
    the next claim, a park) records them first (:meth:`ExactlyOnceCalls.flush`).
    """

    pending: list[UnrecordedAnswer] = field(default_factory=list)

    def take(self) -> list[UnrecordedAnswer]:
        taken, self.pending = self.pending, []
        return taken

    def settle(self) -> None:
        """The answers are recorded (committed): cache each, delete its session."""
        for answer in self.take():
            answer.settle()


def finished_elsewhere(op_key: str, found: AgedRecord | None) -> None:
    """A waiting answer's row was no longer ``sent`` when it was to be recorded: fine if
    another delivery recorded it succeeded (the same answer: one prompt per session, read
    from that session); CallSuperseded if its call ended otherwise first (aborted by a
    cancel, failed with its daemon)."""
    if found is None or found[0].status != CallStatus.SUCCEEDED:
        raise CallSuperseded(
            f"provider call {op_key[:12]} was collected by another delivery first"
            " (rule: a run acts on one outcome per op_key)"
        )


@dataclass(frozen=True)
class CallOutcome:
    """What the ledger records when a call ends (its row's status and what it learned)."""

    status: CallStatus
    now: datetime
    duration_ms: int | None
    response: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error_name: str | None = None
    error: str | None = None


class CallFailed(Exception):
    """A recorded provider call did not produce a valid answer (this attempt is spent).

    ``kind`` tells the step what to do: ``config`` is hopeless and ``refused`` broke a
    containment rule (fail the step now); every other kind may be retried under the
    next attempt's op_key.
    """

    def __init__(
        self,
        op_key: str,
        status: str,
        error: str,
        *,
        error_name: str = "Error",
        kind: FailureKind = "permanent",
        replayed: bool = False,
    ) -> None:
        super().__init__(f"provider call {op_key[:12]} {status}: {error}")
        self.op_key = op_key
        self.status = status
        self.error = error
        self.error_name = error_name
        self.kind = kind
        self.replayed = replayed  # read back from the ledger, not a fresh failure

    @property
    def retryable(self) -> bool:
        return self.kind not in ("config", "refused")


UNKNOWN_ERROR = "claimed but never recorded: the calling worker stopped mid-call"
"""Both the ledger's error and the raised one: the next attempt's prompt quotes the reason,
so the worker that declares a call unknown and one that reads it later must word it alike,
or they would build different prompts (op_keys) for the same attempt and both call."""


class OutcomeUnknown(CallFailed):
    """The call was claimed but never recorded (its worker died): never repeat blindly."""


class CallPending(Exception):
    """The call was sent (``prompt_async``) and its answer is not in yet: the step parks.

    Nothing waits on the model: the runner frees the worker's thread and parks the
    step until ``hold_s`` from now (the call's deadline). The collector wakes it when
    the session ends; the reconciler's sweep wakes it at the deadline if nothing did.
    ``woken``: a wake-up was already recorded for the call (a parked step then waits
    for the next one instead of waking itself). ``unrecorded``: the daemon took the
    prompt but its row still says ``claimed``; whoever catches this records it ``sent``
    (the runner does it in the transaction that parks the step: one commit, not two).
    """

    def __init__(
        self, op_key: str, session_id: str, hold_s: float, *, woken: bool, unrecorded: bool = False
    ) -> None:
        super().__init__(f"provider call {op_key[:12]} sent (session {session_id}); awaiting")
        self.op_key = op_key
        self.session_id = session_id
        self.hold_s = max(0.0, hold_s)
        self.woken = woken
        self.unrecorded = unrecorded


class CallSuperseded(Exception):
    """This delivery's call finished after another delivery declared it unknown.

    The outcome is recorded on the row (``succeeded_late``, ``failed_late``), but the
    run went on without it: the step stops here, as one that lost its lease does.
    """


MAX_ERROR_CHARS = 4000
"""An error is quoted in the ledger, the diagnostic and the next attempt's prompt; an
agent's text inside it (a schema violation repeats the offending value) is cut here."""


def bounded_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, made storable (a NUL as U+FFFD)."""
    text = storable_text(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


MAX_FAILED_RECORD_BYTES = 256 * 1024
"""What the ledger keeps whole of a refused answer; past it, an excerpt and its digest."""
EXCERPT_CHARS = 64 * 1024


def bounded_record(record: dict[str, Any], limit: int = MAX_FAILED_RECORD_BYTES) -> dict[str, Any]:
    """``record`` (a refused answer, redacted), or an excerpt of it when it is larger than
    ``limit``: an answer under the byte cap is still megabytes that every read of the
    run's ledger would carry. Usage (cost) and the tool trail (triage) are kept whole
    when they are small; the digest names the whole."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    raw = text.encode()
    if len(raw) <= limit:
        return record
    kept: dict[str, Any] = {
        "excerpt": text[:EXCERPT_CHARS],
        "bytes": len(raw),
        "sha256": sha256_hex(raw),
        "note": f"refused answer larger than {limit} bytes: the first {EXCERPT_CHARS} kept",
    }
    for key in ("usage", "tools"):
        value = record.get(key)
        if value is not None and len(json.dumps(value, default=str)) <= EXCERPT_CHARS:
            kept[key] = value
    return kept
