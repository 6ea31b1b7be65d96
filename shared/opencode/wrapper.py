"""OCWrapper: the only door to OpenCode. Only steps use it.

``prompt_structured`` claims the call's op_key in ``app.opencode_calls`` in its own
committed transaction *before* any HTTP, so a key is paid for at most once; a repeat
returns the recorded answer (L1 memory, then L2 ledger) without reaching the server.
Every outcome is recorded: succeeded, failed (with the error kind), timed_out (the
session is aborted), aborted, or unknown (claimed by a worker that never finished). A
claimant that finishes after another delivery declared its call unknown records what
it learned (succeeded_late, failed_late) and stops (CallSuperseded): the run went on
without the call.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock
from shared.db.engine import unit_of_work
from shared.db.models import OpenCodeCall
from shared.db.repos.ledger import LedgerRepo
from shared.domain.contracts import ContractViolation, validate_answer
from shared.domain.vocab import CallStatus
from shared.hashing import op_key as make_op_key
from shared.opencode.cache import LruCache
from shared.opencode.client import AnswerTooLarge, ModelRef, OpenCodeClient, PromptReply
from shared.opencode.errors import (
    OpenCodeAborted,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeTransientError,
    OpenCodeUnreachable,
    StructuredOutputMissing,
)
from shared.opencode.tools import forbidden_tool_uses, permission_rules, tools_map
from shared.redact import redact

CacheLevel = Literal["miss", "l1", "l2"]
ClaimGuard = Callable[[Session], None]
FailureKind = Literal["contract", "timeout", "transient", "permanent", "config", "unknown"]

log = structlog.get_logger("kodo.oc")


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

    @property
    def op_key(self) -> str:
        return make_op_key(self.run_id, self.step_id, self.attempt, self.prompt, self.schema)


@dataclass(frozen=True)
class StructuredResult:
    op_key: str
    answer: dict[str, Any]
    cache: CacheLevel
    usage: dict[str, Any]


class CallFailed(Exception):
    """A recorded provider call did not produce a valid answer (this attempt is spent).

    ``kind`` tells the step what to do: ``config`` is hopeless (fail the step now);
    every other kind may be retried under the next attempt's op_key.
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
        return self.kind != "config"


UNKNOWN_ERROR = "claimed but never recorded: the calling worker stopped mid-call"
"""Both the ledger's error and the raised one: the next attempt's prompt quotes the reason,
so the worker that declares a call unknown and one that reads it later must word it alike,
or they would build different prompts (op_keys) for the same attempt and both call."""


class OutcomeUnknown(CallFailed):
    """The call was claimed but never recorded (its worker died): never repeat blindly."""


class CallSuperseded(Exception):
    """This delivery's call finished after another delivery declared it unknown.

    The outcome is recorded on the row (``succeeded_late``, ``failed_late``), but the
    run went on without it: the step stops here, as one that lost its lease does.
    """


def usage_of(info: dict[str, Any]) -> dict[str, Any]:
    """Normalise OpenCode's ``tokens``/``cost`` (of a message or a session) for the ledger."""
    tokens = info.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    cache = tokens.get("cache")
    cache = cache if isinstance(cache, dict) else {}

    def count(value: object) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    cost = info.get("cost")
    parts = {
        "input_tokens": count(tokens.get("input")),
        "output_tokens": count(tokens.get("output")),
        "reasoning_tokens": count(tokens.get("reasoning")),
        "cache_read_tokens": count(cache.get("read")),
        "cache_write_tokens": count(cache.get("write")),
    }
    total = count(tokens.get("total")) or sum(parts.values()) - parts["cache_write_tokens"]
    return {
        "total_tokens": total,
        **parts,
        "cost_usd": float(cost) if isinstance(cost, int | float) else 0.0,
    }


MAX_ERROR_CHARS = 4000
"""An error is quoted in the ledger, the diagnostic and the next attempt's prompt; an
agent's text inside it (a schema violation repeats the offending value) is cut here."""


def bounded_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


def _kind_of(exc: OpenCodeError) -> FailureKind:
    if isinstance(exc, AnswerTooLarge):
        return "contract"  # the answer broke a rule: the next attempt is told which
    if isinstance(exc, OpenCodeConfigError):
        return "config"
    if isinstance(exc, OpenCodeTimeout):
        return "timeout"
    if isinstance(exc, StructuredOutputMissing):
        return "contract"
    if isinstance(exc, OpenCodePermanentError):
        return "permanent"
    return "transient"


_RECORDED_CLASSES: dict[str, type[OpenCodeError]] = {
    cls.__name__: cls
    for cls in (
        OpenCodeError,
        OpenCodeTransientError,
        OpenCodeUnreachable,
        OpenCodeServerError,
        OpenCodeAborted,
        OpenCodePermanentError,
        OpenCodeConfigError,
        StructuredOutputMissing,
    )
}


def _recorded_kind(status: str, error_name: str | None) -> FailureKind:
    """The kind of a failure read back from the ledger: the same as when it happened."""
    if status == CallStatus.TIMED_OUT:
        return "timeout"
    cls = _RECORDED_CLASSES.get(error_name or "")
    return _kind_of(cls(error_name or "")) if cls is not None else "contract"


@dataclass(frozen=True)
class _Turn:
    session: dict[str, Any] | None  # None: the totals could not be read
    earlier: list[dict[str, Any]] | OpenCodeError  # the error: the turn is not inspectable
    children: list[dict[str, Any]]


class _Rejected(Exception):
    """The daemon answered, but the answer breaks one of our rules."""

    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = error_name


class OCWrapper:
    def __init__(
        self,
        client: OpenCodeClient,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        model: ModelRef,
        timeout_s: float,
        l1: LruCache | None = None,
        wait_poll_s: float = 0.05,
        claim_grace_s: float = 5.0,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.clock = clock
        self.model = model
        self.timeout_s = timeout_s
        self.l1 = l1 if l1 is not None else LruCache()
        self.wait_poll_s = wait_poll_s
        self.claim_grace_s = claim_grace_s
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _reader_pool(self) -> ThreadPoolExecutor:
        """Threads for reads sent beside the caller's own; a forked child makes its own
        (an executor inherited across fork has no live threads)."""
        with self._pool_lock:  # steps on a threads pool share this wrapper
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kodo-oc-read")
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None

    def prompt_structured(
        self, call: StructuredCall, *, guard: ClaimGuard | None = None
    ) -> StructuredResult:
        """Answer ``call`` exactly once per op_key; raise CallFailed if it has no valid answer.

        ``guard`` runs inside the claim's transaction, before the claim; whatever it
        raises rolls the claim back and propagates (nothing is called or recorded).
        """
        key = call.op_key
        bound = log.bind(
            run_id=call.run_id,
            step_id=call.step_id,
            op_key=key,
            attempt=call.attempt,
            agent=call.agent,
        )
        hit = self.l1.get(key)
        if hit is not None:
            bound.info("oc.cache_hit", cache="l1")
            return StructuredResult(key, hit["answer"], "l1", hit["usage"])
        with unit_of_work(self.sessions) as s:
            if guard is not None:
                guard(s)
            won = LedgerRepo(s).claim(
                op_key=key,
                run_id=call.run_id,
                step_id=call.step_id,
                attempt=call.attempt,
                agent=call.agent,
                request=redact(self._request_record(call)),
            )
        if not won:
            result = self._recorded(key)
            bound.info("oc.cache_hit", cache="l2")
            return result
        result = self._call(call, key)
        bound.info("oc.call", cache="miss", tokens=result.usage.get("total_tokens"))
        return result

    # -- the one path that reaches the server ---------------------------------------

    def _call(self, call: StructuredCall, key: str) -> StructuredResult:
        started = self.clock.monotonic()
        session_id: str | None = None
        reply: PromptReply | None = None
        try:
            session = self.client.create_session(
                directory=call.directory,
                title=f"kodo {call.step_id} {call.run_id} #{call.attempt}",
                permission=permission_rules(call.agent),
            )
            session_id = str(session["id"])
            with unit_of_work(self.sessions) as s:
                LedgerRepo(s).mark_started(key, session_id)
            reply = self.client.prompt(
                session_id,
                directory=call.directory,
                agent=call.agent,
                model=self.model,
                text=call.prompt,
                tools=tools_map(call.agent),
                format={"type": "json_schema", "schema": call.schema, "retryCount": 1},
                timeout_s=self.timeout_s,
            )
            turn = self._inspect_turn(session_id, call.directory)
            usage = self._usage(turn, reply)
            self._assert_rules(call, session_id, reply, turn)
            answer = validate_answer(call.schema, reply.info.get("structured"))
        except OpenCodeTimeout as exc:
            if session_id is not None:
                self._abort_quietly(session_id, call.directory)
            raise self._fail(key, started, CallStatus.TIMED_OUT, exc, None, kind="timeout") from exc
        except OpenCodeError as exc:
            status = CallStatus.ABORTED if isinstance(exc, OpenCodeAborted) else CallStatus.FAILED
            raise self._fail(key, started, status, exc, exc.reply, kind=_kind_of(exc)) from exc
        except ContractViolation as exc:
            raise self._fail(
                key,
                started,
                CallStatus.FAILED,
                exc,
                reply,
                kind="contract",
                name="ContractViolation",
            ) from exc
        except _Rejected as exc:
            raise self._fail(
                key, started, CallStatus.FAILED, exc, reply, kind="contract", name=exc.error_name
            ) from exc
        self._record(
            key,
            CallStatus.SUCCEEDED,
            started,
            response=redact(self._response_record(reply, usage)),
            usage=usage,
        )
        self.l1.put(key, {"answer": answer, "usage": usage})
        return StructuredResult(key, answer, "miss", usage)

    def _inspect_turn(self, session_id: str, directory: str) -> _Turn:
        """Read what the answer alone does not tell, three requests in flight at once.

        The session's totals (usage), the turn's earlier messages (tool uses) and the
        session's children are independent reads; sent together they cost one round
        trip instead of three.
        """
        pool = self._reader_pool()
        totals = pool.submit(self.client.get_session, session_id, directory=directory)
        children = pool.submit(self.client.session_children, session_id, directory=directory)
        try:
            earlier: list[dict[str, Any]] | OpenCodeError = self.client.earlier_turn_messages(
                session_id, directory=directory
            )
        except OpenCodeError as exc:
            earlier = exc
        try:
            session: dict[str, Any] | None = totals.result()
        except OpenCodeError:
            session = None
        return _Turn(session, earlier, children.result())  # a failed children read raises

    @staticmethod
    def _usage(turn: _Turn, reply: PromptReply) -> dict[str, Any]:
        """The whole turn's usage: the fresh session's totals.

        Only the last assistant message of a turn is returned, so its own usage
        undercounts a turn with tool calls; it is the floor when totals are unreadable.
        """
        if turn.session is None:
            return usage_of(reply.info)
        usage = usage_of(turn.session)
        return usage if usage["total_tokens"] else usage_of(reply.info)

    @staticmethod
    def _assert_rules(
        call: StructuredCall, session_id: str, reply: PromptReply, turn: _Turn
    ) -> None:
        """Fail closed on any tool use outside the allowlist anywhere in the turn, and on
        any child session."""
        if isinstance(turn.earlier, OpenCodeError):
            raise _Rejected(
                "TurnNotInspectable", f"cannot read the turn's messages: {turn.earlier}"
            ) from turn.earlier
        parts = [p for m in turn.earlier for p in m.get("parts", []) if isinstance(p, dict)]
        forbidden = forbidden_tool_uses(call.agent, parts + reply.parts)
        if forbidden:
            raise _Rejected("ToolNotAllowed", f"agent {call.agent!r} used {', '.join(forbidden)}")
        if turn.children:
            ids = ", ".join(str(c.get("id")) for c in turn.children)
            raise _Rejected("ChildSessionForbidden", f"session {session_id} spawned {ids}")

    # -- a claim lost to an earlier (or concurrent) caller ---------------------------

    def _recorded(self, key: str) -> StructuredResult:
        """Return what the ledger recorded for ``key``, waiting out a live claim."""
        patience = self.timeout_s + self.claim_grace_s
        deadline = time.monotonic() + patience
        while True:
            with unit_of_work(self.sessions) as s:
                ledger = LedgerRepo(s)
                row = ledger.get(key)
                if row is None:  # pragma: no cover - the claim conflict proves it exists
                    raise CallFailed(key, "missing", "ledger row vanished", kind="unknown")
                if row.status != CallStatus.CLAIMED:
                    return self._from_row(row)
                # Aged by the database's clock: the claim was written by another host.
                age = ledger.claim_age_s(key) or 0.0
            # A claim older than any live call could be belongs to a dead worker.
            if time.monotonic() > deadline or age > patience:
                return self._declare_unknown(key)
            time.sleep(self.wait_poll_s)

    def _from_row(self, row: OpenCodeCall) -> StructuredResult:
        if row.status != CallStatus.SUCCEEDED or row.response is None:
            if row.status == CallStatus.UNKNOWN or CallStatus(row.status).is_late:
                # A late row holds its own outcome, but the run acted on the declaration:
                # it reads back as that, worded alike, so the next attempt's prompt (its
                # op_key) is the one the declaring delivery built.
                raise OutcomeUnknown(
                    row.op_key,
                    row.status,
                    UNKNOWN_ERROR,
                    error_name="OutcomeUnknown",
                    kind="unknown",
                )
            raise CallFailed(
                row.op_key,
                row.status,
                row.error or "no answer recorded",
                error_name=row.error_name or "Error",
                kind=_recorded_kind(row.status, row.error_name),
                replayed=True,
            )
        answer = row.response.get("structured")
        if not isinstance(answer, dict):
            raise CallFailed(row.op_key, row.status, "recorded answer is not an object")
        usage = row.usage or {}
        self.l1.put(row.op_key, {"answer": answer, "usage": usage})
        return StructuredResult(row.op_key, answer, "l2", usage)

    def _declare_unknown(self, key: str) -> StructuredResult:
        with unit_of_work(self.sessions) as s:
            LedgerRepo(s).finish(
                key,
                status=CallStatus.UNKNOWN,
                now=self.clock.now(),
                duration_ms=None,
                error_name="OutcomeUnknown",
                error=UNKNOWN_ERROR,
            )
            row = LedgerRepo(s).get(key)
        if row is not None and row.status != CallStatus.UNKNOWN:
            return self._from_row(row)  # it finished while we declared
        raise OutcomeUnknown(
            key,
            CallStatus.UNKNOWN,
            UNKNOWN_ERROR,  # the recorded text: the next attempt's prompt (op_key) quotes it
            error_name="OutcomeUnknown",
            kind="unknown",
        )

    # -- records -------------------------------------------------------------------

    def _fail(
        self,
        key: str,
        started: float,
        status: CallStatus,
        exc: Exception,
        reply: PromptReply | None,
        *,
        kind: FailureKind,
        name: str | None = None,
    ) -> CallFailed:
        error_name = name or type(exc).__name__
        error = bounded_error(f"{error_name}: {exc}")
        usage = usage_of(reply.info) if reply is not None else None
        self._record(
            key,
            status,
            started,
            response=redact(self._response_record(reply, usage)) if reply is not None else None,
            usage=usage,
            error_name=error_name,
            error=error,
        )
        log.warning("oc.call_failed", op_key=key, status=status, error_name=error_name, kind=kind)
        return CallFailed(key, status, error, error_name=error_name, kind=kind)

    def _record(
        self,
        key: str,
        status: CallStatus,
        started: float,
        *,
        response: dict[str, Any] | None,
        usage: dict[str, Any] | None,
        error_name: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the claimant's outcome, or raise CallSuperseded if it came too late.

        A row another delivery declared ``unknown`` meanwhile gets the outcome as
        ``succeeded_late`` or ``failed_late`` (the call was paid: its answer and usage
        are kept), and this delivery stops without using it.
        """
        late = (
            CallStatus.SUCCEEDED_LATE if status is CallStatus.SUCCEEDED else CallStatus.FAILED_LATE
        )
        outcome: dict[str, Any] = {
            "now": self.clock.now(),
            "duration_ms": self._elapsed_ms(started),
            "response": response,
            "usage": usage,
            "error_name": error_name,
            "error": error,
        }
        with unit_of_work(self.sessions) as s:
            ledger = LedgerRepo(s)
            if ledger.finish(key, status=status, **outcome):
                return
            recorded = ledger.finish(key, status=late, from_status=CallStatus.UNKNOWN, **outcome)
            row = ledger.get(key)
        found = row.status if row is not None else "gone"
        log.warning("oc.call_late", op_key=key, status=status.value, recorded=recorded, row=found)
        raise CallSuperseded(
            f"provider call {key[:12]} finished ({status}) after another delivery declared it"
            f" unknown: recorded {found}, not used (rule: a run acts on one outcome per op_key)"
        )

    def _abort_quietly(self, session_id: str, directory: str) -> None:
        # The call is recorded timed_out either way; a failed abort changes nothing.
        with contextlib.suppress(OpenCodeError):
            self.client.abort(session_id, directory=directory)

    def _elapsed_ms(self, started: float) -> int:
        return max(0, int((self.clock.monotonic() - started) * 1000))

    def _request_record(self, call: StructuredCall) -> dict[str, Any]:
        return {
            "prompt": call.prompt,
            "schema": call.schema,
            "agent": call.agent,
            "model": {"providerID": self.model.provider_id, "modelID": self.model.model_id},
            "tools": tools_map(call.agent),
            "permission": permission_rules(call.agent),
            "directory": call.directory,
        }

    @staticmethod
    def _response_record(reply: PromptReply, usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "info": reply.info,
            "parts": reply.parts,
            "structured": reply.info.get("structured"),
            "usage": usage,
        }
