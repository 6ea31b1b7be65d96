"""The exactly-once call protocol: claim the op_key, send, record, cache.

``prompt_structured`` claims the call's op_key in the ledger in its own committed
transaction *before* any request, so a key is paid for at most once; a repeat returns
the recorded answer (L1 memory, then the L2 ledger) without reaching the daemon.
Every outcome is recorded: succeeded, failed (with the error kind), timed_out (the
session is aborted), aborted, or unknown (claimed by a worker that never finished). A
claimant that finishes after another delivery declared its call unknown records what
it learned (succeeded_late, failed_late) and stops (CallSuperseded): the run went on
without the call.

With ``async_calls`` the daemon is prompted with ``prompt_async`` and no thread waits
on the model: the row becomes ``sent`` and CallPending parks the step; a later delivery
(woken by the collector when the session ends, or by the deadline sweep) collects the
answer from the session's last message and judges and records it exactly as a blocking
call's. Past ``timeout_s`` from sending, a sent call is aborted and ``timed_out``.

The daemon and the ledger are ports (:mod:`shared.opencode.ports`); what the turn did
besides answering is judged by :mod:`shared.opencode.turn_inspection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

from shared.clock import Clock
from shared.domain.call_record import ABORT_UNCONFIRMED, AgedRecord, CallRecord, StepLedger
from shared.domain.contracts import ContractViolation, validate_answer
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.domain.turn_spend import CALL_TOKEN_BOUND, OVER_BOUND_MARK, is_over_bound
from shared.domain.vocab import NEVER_SENT, NEVER_SENT_ERROR, CallStatus
from shared.opencode.cache import LruCache
from shared.opencode.calls import (
    UNKNOWN_ERROR,
    CallFailed,
    CallOutcome,
    CallPending,
    CallSuperseded,
    FailureKind,
    OutcomeUnknown,
    StructuredCall,
    StructuredResult,
    UnrecordedAnswer,
    UnrecordedAnswers,
    bounded_error,
    bounded_record,
    finished_elsewhere,
)
from shared.opencode.confinement import RULES as CONFINEMENT_RULES
from shared.opencode.daemons import Daemon, DaemonPool
from shared.opencode.errors import (
    DaemonLost,
    OpenCodeAborted,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeTransientError,
    OpenCodeUnreachable,
    SessionLost,
    StructuredOutputMissing,
    TurnLost,
    TurnUnanswered,
    WorktreeBusy,
    classify_info_error,
    is_format_400,
)
from shared.opencode.messages import AnswerTooLarge, ModelRef, PromptReply, prompt_message_id
from shared.opencode.ports import AgentClient, CallLedger
from shared.opencode.tools import permission_rules, tools_map
from shared.opencode.turn_inspection import (
    Turn,
    TurnRejected,
    assert_turn_rules,
    tool_trail,
    turn_usage,
    unread_reason,
    usage_of,
)
from shared.opencode.withheld import withheld_record
from shared.redact import redact, redact_text

log = structlog.get_logger("kodo.oc")
BILLED_READ_S = 10.0
"""How long a failed call's read of its session's totals may take (``_billed``)."""
ABORT_S = 10.0
"""How long an abort of a call's turn may take (the call ends recorded either way)."""
ABORT_RETRY_S = 10.0
"""An overdue call whose abort the daemon did not confirm parks this long, then tries again."""
ABORT_WINDOW_S = 120.0
"""How long past its deadline an overdue call waits for its abort to be confirmed."""


def _completed(info: dict[str, Any]) -> bool:
    """Whether an assistant message says its step ended (``time.completed``)."""
    times = info.get("time")
    return isinstance(times, dict) and times.get("completed") is not None


def _cannot_tell(exc: OpenCodeError) -> bool:
    """Whether the daemon could not be reached (no status: refused, timed out, cut off):
    it told kodo nothing about the turn, so nothing can be concluded from it."""
    return isinstance(exc, OpenCodeTransientError) and exc.status is None


def _nothing_ran(exc: OpenCodeError) -> bool:
    """Whether the error reading a session's newest message says no step is there: the
    session is gone (404), or the newest message is kodo's prompt (the format 400)."""
    return exc.status == 404 or is_format_400(exc)


def _foreign_newest(reply: PromptReply | None, op_key: str) -> OpenCodeError | None:
    """Why the session's newest message, a user message that is not kodo's prompt, is
    one kodo cannot judge the turn by (someone went on with the session; the steps
    before it ran unjudged), or None."""
    if reply is None or reply.info.get("role") == "assistant":
        return None
    found = reply.info.get("id")
    if found == prompt_message_id(op_key):
        return None
    return OpenCodePermanentError(
        f"the session's newest message {found!r:.80} is a {reply.info.get('role')!r:.20}"
        " message kodo did not send"
    )


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
        WorktreeBusy,
        DaemonLost,
        TurnUnanswered,
        TurnLost,
        SessionLost,
    )
}


def _recorded_kind(status: str, error_name: str | None) -> FailureKind:
    """The kind of a failure read back from the ledger: the same as when it happened (a
    refusal recorded ``timed_out``, its abort unconfirmed, is a refusal)."""
    if error_name in REFUSED_RULES:
        return "refused"
    if error_name == NEVER_SENT:  # as OutcomeUnknown is: its claimant stopped
        return "unknown"
    if status == CallStatus.TIMED_OUT:
        return "timeout"
    cls = _RECORDED_CLASSES.get(error_name or "")
    return _kind_of(cls(error_name or "")) if cls is not None else "contract"


CLAIM_GRACE_S = 5.0
"""How much longer than its own timeout a delivery waits out another's live claim
before it declares the call unknown."""


class _CollectedElsewhere(Exception):
    """Another delivery recorded the sent call's outcome first: read it back."""


class _JudgeLater(Exception):
    """A sent call's turn ended, but the daemon cannot show it whole now (a transient
    error reading its steps): nothing is recorded, the collector judges it later."""

    def __init__(self, cause: OpenCodeError) -> None:
        super().__init__(str(cause))
        self.cause = cause


JUDGE_RETRY_S = 10.0
"""A woken call whose turn the daemon cannot show now parks this long, then tries again."""
INSPECT_TRIES = 3
"""A blocking call reads a turn this many times (a transient error) before refusing it:
nothing collects it later, and one daemon 5xx must not fail an honest run closed."""
INSPECT_RETRY_S = 1.0
"""...waiting this long, then twice as long, between the reads."""

UNJUDGED = "TurnNotInspectable"
"""A turn that ran but that kodo cannot judge (its answer or its steps unreadable)."""
REFUSED_RULES = CONFINEMENT_RULES | {UNJUDGED, CALL_TOKEN_BOUND}
"""The turn rules whose violation fails the step closed, never retried: a model can
make its own turn unreadable at will (an answer past the byte cap, nested too deep, more
steps than kodo reads), and a retry would leave whatever that turn did unjudged; a turn
aborted for passing its token bound would spend as much again."""


WOKEN_SETTLE_S = 5.0
"""How long a delivery woken by ``session.error`` waits for the session to go idle
(the daemon sends the error, then the idle) before it parks again."""


def abort_turn(client: AgentClient, session_id: str, directory: str) -> bool:
    """Ask the daemon to stop the session's turn; True once it said it did, or that the
    session is gone (nothing of it runs). A failure is logged, never raised: what to do
    about an unconfirmed abort is the caller's rule."""
    try:
        return client.abort(session_id, directory=directory, timeout_s=ABORT_S)
    except OpenCodeError as exc:
        log.warning("oc.abort_failed", session_id=session_id, error=str(exc)[:200])
        return exc.status == 404


class ExactlyOnceCalls:
    """Structured prompts to the daemon, each op_key paid for at most once."""

    def __init__(
        self,
        client: AgentClient | DaemonPool,
        ledger: CallLedger,
        clock: Clock,
        *,
        model: ModelRef,
        timeout_s: float,
        l1: LruCache | None = None,
        wait_poll_s: float = 0.05,
        claim_grace_s: float = CLAIM_GRACE_S,
        quiesce_s: float = 10.0,
        keep_sessions: bool = False,
        async_calls: bool = False,
        daemon: str | None = None,
        abort_window_s: float = ABORT_WINDOW_S,
    ) -> None:
        # One client, or several daemons (OC_BASE_URL as a list): a new call goes to the
        # pool's pick, a recorded one to the daemon its row names.
        self.pool = (
            client if isinstance(client, DaemonPool) else DaemonPool({daemon or "": client}, clock)
        )
        self.ledger = ledger
        self.clock = clock
        self.model = model
        self.timeout_s = timeout_s
        self.l1 = l1 if l1 is not None else LruCache()
        self.wait_poll_s = wait_poll_s
        self.claim_grace_s = claim_grace_s
        self.quiesce_s = quiesce_s
        self.keep_sessions = keep_sessions
        self.async_calls = async_calls
        self.abort_window_s = abort_window_s

    def close(self) -> None:
        self.pool.close()

    def prompt_structured(
        self,
        call: StructuredCall,
        *,
        lease: StepLease | None = None,
        prepare: Callable[[], None] | None = None,
        seen: StepLedger | None = None,
        unrecorded: UnrecordedAnswers | None = None,
    ) -> StructuredResult:
        """Answer ``call`` exactly once per op_key; raise CallFailed if it has no valid answer.

        With ``lease``, the step's lease is held in the claim's transaction; if the
        delivery was abandoned, StepAbandoned propagates and nothing is called or recorded.
        In asynchronous mode CallPending is raised while the answer is not in.
        ``prepare`` runs only if this delivery won the claim, before the session is made
        (a replay never runs it); an OpenCodeError it raises is the call's recorded failure.

        ``seen``: what the delivery read of the step's calls in the transaction that
        took its lease. The row of the call the step was parked on, if it is this
        call's, is read as a lost claim's row would be, without a claim: the call exists
        (nothing can be sent twice), and whatever this delivery then records is fenced
        (the ledger's ``from_status`` for the answer, the step's fence for the outcome
        and for parking again). A call of an attempt after every one the ledger held
        gets its session before its claim, recorded with it (no ``mark_started``
        transaction); not with ``prepare``, whose reset aborts the step's sessions in
        doubt. Without ``seen``, every call is claimed first, as a replay may be.

        ``unrecorded``: a good answer this delivery collects from a sent call is left
        there, its row still ``sent``, for the caller to record with the step's outcome
        (see UnrecordedAnswers); without it, every outcome is recorded here.
        """
        key = call.op_key
        bound = log.bind(
            run_id=call.run_id,
            step_id=call.step_id,
            op_key=key,
            attempt=call.attempt,
            agent=call.agent,
        )
        if unrecorded is not None:
            self.flush(unrecorded)  # an earlier attempt's answer precedes this call's claim
        hit = self.l1.get(key)
        if hit is not None:
            bound.info("oc.cache_hit", cache="l1")
            return StructuredResult(key, hit["answer"], "l1", hit["usage"], hit.get("rejected"))
        recorded: AgedRecord | None
        opened: tuple[Daemon, str] | None = None
        parked = seen.parked_row(key) if seen is not None else None
        if parked is not None:
            won, recorded = False, parked
        else:
            new = seen is not None and seen.is_new(call.attempt)
            opened = self._session_first(call) if new and prepare is None else None
            try:
                won, recorded = self.ledger.claim_or_read(
                    call,
                    redact(self._request_record(call)),
                    lease=lease,
                    session=None if opened is None else (opened[1], opened[0].url or None),
                )
            except BaseException:
                if opened is not None:  # refused (budget, a moved run): nothing was sent
                    self._forget(opened[0], opened[1], call.directory)
                raise
            if not won and opened is not None:  # another delivery's call: never prompted
                self._forget(opened[0], opened[1], call.directory)
        if not won:
            result = self._recorded(call, recorded, unrecorded)
            # a recorded answer, or a sent call's answer collected now
            bound.info(
                "oc.cache_hit" if result.cache == "l2" else "oc.collected", cache=result.cache
            )
            return result
        result = self._call(call, key, prepare, opened, lease)
        bound.info("oc.call", cache="miss", tokens=result.usage.get("total_tokens"))
        return result

    # -- the one path that reaches the daemon ----------------------------------------

    def _session_first(self, call: StructuredCall) -> tuple[Daemon, str] | None:
        """A session for ``call`` made before its claim, so the claim records it (one
        transaction less than claim, then ``mark_started``); None if no daemon made one
        (the claim goes without, and the won call tries again and records why not).

        Only for a call without ``prepare``: ApplyPatchST's prepare aborts the step's
        sessions in doubt, which a claimed row with a session would be."""
        try:
            daemon, session = self._new_session(call)
        except OpenCodeError as exc:
            log.info("oc.session_deferred", op_key=call.op_key, error=str(exc)[:200])
            return None
        return daemon, str(session["id"])

    def _call(
        self,
        call: StructuredCall,
        key: str,
        prepare: Callable[[], None] | None,
        opened: tuple[Daemon, str] | None = None,
        lease: StepLease | None = None,
    ) -> StructuredResult:
        """Send the won call: on the session made before the claim (``opened``, already
        recorded with it), or after ``prepare`` on a new one, recorded before sending
        (with ``lease``, only while it holds: :meth:`_start`)."""
        started = self.clock.monotonic()
        session_id: str | None = None
        daemon = self.pool.first
        try:
            if opened is not None:
                daemon, session_id = opened
            else:
                if prepare is not None:
                    prepare()
                daemon, session_id = self._start(call, key, started, lease)
            if not self.async_calls:  # a blocking prompt: nothing collects a late one
                self._still_claimed(call, key, daemon, session_id)
            try:
                reply = self._send(daemon.client, session_id, call)
            except OpenCodeError as exc:
                if exc.reply is not None:  # the turn ended on an error (info.error): judged
                    # as a collected turn is, its rules first
                    return self._judge(
                        call, key, daemon, session_id, exc.reply, started, CallStatus.CLAIMED
                    )
                failure = self._send_failed(call, daemon, session_id, started, exc)
                if failure is exc:
                    raise
                raise failure from exc
            if reply is None:  # sent with prompt_async: its answer is collected later
                # recorded ``sent`` by whoever parks (with the park, one commit); if
                # this worker dies first, the claim with its session is collected later
                raise CallPending(key, session_id, self.timeout_s, woken=False, unrecorded=True)
        except OpenCodeTimeout as exc:
            billed = None
            timeout = exc
            if session_id is not None:  # recorded timed_out whether or not it stops
                settled = abort_turn(daemon.client, session_id, call.directory)
                self._refuse_stopped(call, daemon, session_id, started, CallStatus.CLAIMED, settled)
                if not settled:
                    timeout = OpenCodeTimeout(f"{exc}; {ABORT_UNCONFIRMED}")
                billed = self._billed(daemon, session_id, call.directory, None)
            raise self._fail(
                key, started, CallStatus.TIMED_OUT, timeout, None, kind="timeout", usage=billed
            ) from exc
        except OpenCodeError as exc:
            status = CallStatus.ABORTED if isinstance(exc, OpenCodeAborted) else CallStatus.FAILED
            billed = (
                self._billed(daemon, session_id, call.directory, exc.reply)
                if session_id is not None and not isinstance(exc, OpenCodeUnreachable)
                else None
            )
            failed = self._fail(
                key, started, status, exc, exc.reply, kind=_kind_of(exc), usage=billed
            )
            self._forget(daemon, session_id, call.directory)
            raise failed from exc
        return self._judge(call, key, daemon, session_id, reply, started, CallStatus.CLAIMED)

    def _start(
        self, call: StructuredCall, key: str, started: float, lease: StepLease | None
    ) -> tuple[Daemon, str]:
        """A new session for the won call, recorded on its row (with ``lease``, only while
        the run is still at the step's status and the step ours).

        What ``prepare`` did took time after the claim (up to ``quiesce_s``): a cancel in
        it found no session to abort, and the prompt left anyway (red-team helper-96).
        Refused now, nothing is sent: the session is deleted, the claim recorded
        ``failed`` with no usage (its reservation released, a later delivery reads it
        as ended) and StepAbandoned raised."""
        daemon, session = self._new_session(call)
        session_id = str(session["id"])
        try:
            started = self.ledger.mark_started(key, session_id, daemon.url or None, lease=lease)
        except StepAbandoned as exc:
            self._forget(daemon, session_id, call.directory)
            withheld = self._outcome(
                CallStatus.FAILED,
                started,
                response=None,
                usage=None,
                error_name="StepAbandoned",
                error=bounded_error(f"StepAbandoned: never sent ({exc})"),
            )
            self.ledger.finish(key, withheld)  # False: declared unknown meanwhile, kept so
            log.info("oc.call_withheld", op_key=key, why=str(exc))
            raise
        if not started:  # given up as never sent by a later delivery: it must not be
            self._forget(daemon, session_id, call.directory)
            log.warning("oc.call_withheld", op_key=key, why="given up as never sent")
            raise CallSuperseded(
                f"provider call {key[:12]} was given up as never sent by another delivery"
                " before its prompt left: not sent (rule: a run acts on one outcome per op_key)"
            )
        return daemon, session_id

    def _still_claimed(
        self, call: StructuredCall, key: str, daemon: Daemon, session_id: str
    ) -> None:
        """Raise CallSuperseded (its session deleted) unless the call's row is still
        claimed with this session, read just before a blocking prompt leaves.

        A worker frozen for long (a paused VM, a closed laptop) between recording its
        session and sending had its lease lapse and its call taken by a cancel's sweep
        and recorded; the sweep's re-aborts last only the call's deadline and abort
        window, and past them the thawed worker's blocking prompt ran to its end on a
        cancelled run, paid (red-team helper-106). Nothing is sent then. (Asynchronous
        prompts need no such read: the park that follows aborts a late one.)"""
        found = self.ledger.read(key)
        row = found[0] if found is not None else None
        if row is not None and row.status == CallStatus.CLAIMED and row.session_id == session_id:
            return
        self._forget(daemon, session_id, call.directory)
        status = row.status if row is not None else "missing"
        log.warning("oc.call_withheld", op_key=key, why=f"recorded {status} meanwhile")
        raise CallSuperseded(
            f"provider call {key[:12]} was recorded {status} by another before its prompt"
            " left: not sent (rule: a run acts on one outcome per op_key)"
        )

    def _send_failed(
        self,
        call: StructuredCall,
        daemon: Daemon,
        session_id: str,
        started: float,
        exc: OpenCodeError,
    ) -> OpenCodeError:
        """What to raise for a prompt that left but whose answer never arrived whole; a
        turn that may have run is judged first (raising CallFailed if refused), and one
        that may still be running is recorded ``timed_out``, in doubt (CallFailed)."""
        claimed = CallStatus.CLAIMED
        if (
            not self.async_calls
            and not isinstance(exc, OpenCodeTransientError | OpenCodeConfigError)
            and exc.status != 404  # the session is gone: nothing ran there
        ):  # the turn ran, its answer unreadable (too large, not JSON, misshapen)
            raise self._unjudged(call, daemon, session_id, started, claimed, exc) from exc
        named = TurnLost.after(exc)
        if isinstance(named, OpenCodeTimeout | OpenCodeUnreachable):
            return named  # the caller's handler stops and judges a timeout itself
        # the prompt may have run (a broken connection, a 5xx): judged first
        settled = abort_turn(daemon.client, session_id, call.directory)
        self._refuse_stopped(call, daemon, session_id, started, claimed, settled)
        if settled:
            return named
        lost = OpenCodeTimeout(  # it may still run: in doubt, as an unstopped timeout
            f"no answer: {unread_reason(named)} after the prompt left; {ABORT_UNCONFIRMED}"
        )
        billed = self._billed(daemon, session_id, call.directory, None)
        raise self._fail(
            call.op_key, started, CallStatus.TIMED_OUT, lost, None, kind="timeout", usage=billed
        ) from exc

    def _send(
        self, client: AgentClient, session_id: str, call: StructuredCall
    ) -> PromptReply | None:
        """Send the prompt: with ``prompt_async`` (None: the turn runs on), or blocking
        until the turn ends (its last message)."""
        send: Callable[..., PromptReply | None] = (
            client.prompt_async
            if self.async_calls
            else partial(client.prompt, timeout_s=self.timeout_s)
        )
        return send(
            session_id,
            directory=call.directory,
            agent=call.agent,
            model=self.model,
            text=call.prompt,
            tools=tools_map(call.agent),
            format={"type": "json_schema", "schema": call.schema, "retryCount": 1},
            message_id=prompt_message_id(call.op_key),
        )

    def _new_session(self, call: StructuredCall) -> tuple[Daemon, dict[str, Any]]:
        """A session on the first daemon (in the pool's order for the call's run) that accepts a
        connection: nothing was sent to one that refused it, so the next one is tried
        for the same call, and the refuser is passed over for a while."""
        refused: OpenCodeUnreachable | None = None
        for daemon in self.pool.order(call.run_id):  # a run's calls share its daemon
            try:
                session = daemon.client.create_session(
                    directory=call.directory,
                    title=f"kodo {call.step_id} {call.run_id} #{call.attempt}",
                    permission=permission_rules(call.agent),
                )
            except OpenCodeUnreachable as exc:
                log.warning("oc.daemon_unreachable", daemon=daemon.url, error=str(exc)[:200])
                self.pool.mark_down(daemon.url)
                refused = exc
                continue
            return daemon, session
        assert refused is not None  # the pool is never empty
        raise refused

    def _judge(
        self,
        call: StructuredCall,
        key: str,
        daemon: Daemon,
        session_id: str,
        reply: PromptReply,
        started: float,
        from_status: CallStatus,
        unrecorded: UnrecordedAnswers | None = None,
        *,
        cut: bool = False,
        final: bool = False,
        over_bound: str | None = None,
    ) -> StructuredResult:
        """Judge the turn that ended with ``reply`` and record the outcome (once); a good
        answer of a sent call is left in ``unrecorded`` instead, if given. ``cut``: the
        collected turn's last step never completed (its daemon stopped under it).
        ``final``: nothing will collect it later (its deadline passed). ``over_bound``:
        the collector had the turn aborted for passing its token bound (why): an aborted
        turn is refused under that rule (one that ended on its own first is judged as
        any other)."""
        trail: list[dict[str, Any]] | None = None
        usage: dict[str, Any] | None = None  # the whole turn's, once read
        where = (daemon, session_id, call.directory)
        # A turn that ended in an error (info.error) is judged too: one that used a
        # forbidden tool or path and then did not answer is refused for that, with its
        # trail, not recorded as the error it chose to end on. One that was aborted is
        # recorded ``aborted`` whatever it is refused for: the step the abort cut is in
        # no totals, so its settle spends at least the reservation.
        error = classify_info_error(reply.info)
        cut = cut and error is None
        if cut:  # the model may have run a step no totals count: cut short, like a lost turn
            error = TurnLost(
                "the turn's last step never completed (no time.completed, no error) though"
                " its session is idle: the daemon stopped under it"
            )
        ended_as = CallStatus.ABORTED if isinstance(error, OpenCodeAborted) else CallStatus.FAILED
        # A cut turn that also broke a rule is refused under the rule's name, recorded
        # ``aborted`` as it was in effect: the settle still spends at least the reservation.
        refused_as = CallStatus.ABORTED if cut else ended_as
        try:
            prompt_id = prompt_message_id(key)
            try:
                turn = self._inspect(call, daemon, session_id, reply, from_status, final)
            except OpenCodeError as unread:  # its child sessions could not be listed
                self._judge_later(unread, from_status, final)
                said = unread_reason(unread)
                raise TurnRejected(UNJUDGED, f"cannot list the turn's sessions: {said}") from unread
            if isinstance(turn.earlier, OpenCodeError):
                self._judge_later(turn.earlier, from_status, final)
            trail = tool_trail(turn, reply)
            usage = turn_usage(turn, reply) if turn.usage_known else None
            # A broken rule, or a turn kodo cannot judge, outranks the error it ended on.
            assert_turn_rules(
                call.agent,
                session_id,
                reply,
                turn,
                directory=call.directory,
                prompt_id=prompt_id,
            )
            if error is not None:
                error.reply = reply
                raise error
            answer = validate_answer(call.schema, reply.info.get("structured"))
        except OpenCodeError as exc:
            # Stopped for passing its token bound (however the daemon ended it: an
            # error, or a loop that broke between steps with no answer): refused so.
            bound = self._bound_mark(key, over_bound)
            if bound is not None:
                failed = self._bound_refusal(
                    key, started, bound, where, from_status, reply=reply, trail=trail, usage=usage
                )
                self._forget(daemon, session_id, call.directory)
                raise failed from exc
            aborted = isinstance(exc, OpenCodeAborted)
            failed = self._fail(
                key,
                started,
                CallStatus.ABORTED if aborted else ended_as,
                exc,
                exc.reply,
                kind=_kind_of(exc),
                trail=trail,
                from_status=from_status,
                usage=usage or self._billed(daemon, session_id, call.directory, exc.reply or reply),
            )
            self._forget(daemon, session_id, call.directory)
            raise failed from exc
        except (ContractViolation, TurnRejected) as exc:  # answered, but against a rule
            name = exc.error_name if isinstance(exc, TurnRejected) else "ContractViolation"
            bound = None if name in REFUSED_RULES else self._bound_mark(key, over_bound)
            if bound is not None:  # no answer it may be judged by: cut by the bound
                failed = self._bound_refusal(
                    key, started, bound, where, from_status, reply=reply, trail=trail, usage=usage
                )
                self._forget(daemon, session_id, call.directory)
                raise failed from exc
            kind: FailureKind = "refused" if name in REFUSED_RULES else "contract"
            failed = self._fail(
                key,
                started,
                refused_as,
                exc,
                reply,
                kind=kind,
                name=name,
                trail=trail,
                from_status=from_status,
                usage=usage or self._billed(daemon, session_id, call.directory, reply),
            )
            self._forget(daemon, session_id, call.directory)
            raise failed from exc
        if usage is None:
            usage = turn_usage(turn, reply)  # the turn unreadable: the answer's own usage
        response = self._response_record(reply, usage, trail)

        def settle() -> None:
            self._forget(daemon, session_id, call.directory)
            self.l1.put(key, {"answer": answer, "usage": usage})

        if unrecorded is not None and from_status is CallStatus.SENT:
            outcome = self._outcome(CallStatus.SUCCEEDED, started, response=response, usage=usage)
            unrecorded.pending.append(UnrecordedAnswer(key, outcome, settle))
            return StructuredResult(key, answer, "miss", usage)
        self._record(
            key,
            CallStatus.SUCCEEDED,
            started,
            response=response,
            usage=usage,
            from_status=from_status,
        )
        settle()
        return StructuredResult(key, answer, "miss", usage)

    def _bound_mark(self, key: str, given: str | None) -> str | None:
        """The collector's over-bound mark on the call's row: as the collecting delivery
        read it, else read now (a blocking call's row, or a mark made since)."""
        if given is not None:
            return given
        found = self.ledger.read(key)
        error = found[0].error if found is not None else None
        return error if is_over_bound(error) else None

    def _bound_refusal(
        self,
        key: str,
        started: float,
        mark: str,
        where: tuple[Daemon, str, str],
        from_status: CallStatus,
        *,
        reply: PromptReply | None = None,
        trail: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        unconfirmed: str = "",
    ) -> CallFailed:
        """Record a turn stopped for passing its token bound: refused under that rule
        (never tried again: another attempt would spend as much), ``aborted`` (cut
        short: its settle spends the cut step too, and at least the reservation), the
        mark kept as its error; ``timed_out`` if the daemon never confirmed it stopped.
        ``where``: its daemon, session and directory, whose totals bill it when
        ``usage`` (the turn's, read from its messages) is None."""
        daemon, session_id, directory = where
        billed = usage or self._billed(daemon, session_id, directory, reply)
        said = mark.removeprefix(OVER_BOUND_MARK) + unconfirmed
        return self._fail(
            key,
            started,
            CallStatus.TIMED_OUT if unconfirmed else CallStatus.ABORTED,
            TurnRejected(CALL_TOKEN_BOUND, said),
            reply,
            kind="refused",
            name=CALL_TOKEN_BOUND,
            trail=trail,
            from_status=from_status,
            usage=billed,
        )

    def flush(self, unrecorded: UnrecordedAnswers) -> None:
        """Record the answers left in ``unrecorded``, each in its own transaction (a
        verdict on one, or the next claim, is about to be written). One another delivery
        recorded succeeded already is the same answer; raise CallSuperseded if its call
        ended otherwise (aborted by a cancel, failed with its daemon)."""
        while unrecorded.pending:
            answer = unrecorded.pending[0]
            if not self.ledger.finish(answer.op_key, answer.outcome, from_status=CallStatus.SENT):
                finished_elsewhere(answer.op_key, self.ledger.read(answer.op_key))
            unrecorded.pending.pop(0)
            answer.settle()

    # -- a sent call: collect its answer, or park until it comes ----------------------

    def _collect(
        self,
        call: StructuredCall,
        row: CallRecord,
        age: float,
        unrecorded: UnrecordedAnswers | None = None,
    ) -> StructuredResult:
        """The answer of a ``sent`` call if its turn ended; else CallPending (park), or
        ``timed_out`` (aborted) once ``timeout_s`` passed since it was sent."""
        key = call.op_key
        session_id = row.session_id
        if session_id is None:  # pragma: no cover - mark_started precedes mark_sent
            raise CallFailed(key, row.status, "sent call without a session", kind="unknown")
        started = self.clock.monotonic() - age
        daemon = self.pool.of(row.daemon)
        try:
            try:
                return self._collected(call, row, daemon, session_id, age, started, unrecorded)
            except OpenCodeError as exc:
                # The daemon cannot say (unreachable, restarting): wait for the deadline.
                if age < self.timeout_s:
                    log.info("oc.collect_deferred", op_key=key, error=str(exc)[:200])
                    # a woken call is not woken again: it tries again in JUDGE_RETRY_S
                    left = self.timeout_s - age
                    hold = min(JUDGE_RETRY_S, left) if row.woken else left
                    raise CallPending(key, session_id, hold, woken=row.woken) from exc
                unstopped = self._stop_overdue(call, row, daemon, age)
                sent = CallStatus.SENT  # stopped: judged now, or refused if it cannot be
                self._refuse_stopped(call, daemon, session_id, started, sent, not unstopped)
                if row.error is not None and is_over_bound(row.error):
                    where = (daemon, session_id, call.directory)
                    raise self._bound_refusal(
                        key, started, row.error, where, sent, unconfirmed=unstopped
                    ) from exc
                timeout = OpenCodeTimeout(
                    f"no answer collected within {self.timeout_s:g}s of sending"
                    f" (last: {unread_reason(exc)}){unstopped}"
                )
                billed = (
                    None
                    if isinstance(exc, OpenCodeUnreachable)
                    else self._billed(daemon, session_id, call.directory, None)
                )
                raise self._fail(
                    key,
                    started,
                    CallStatus.TIMED_OUT,
                    timeout,
                    None,
                    kind="timeout",
                    from_status=CallStatus.SENT,
                    usage=billed,
                ) from exc
        except _CollectedElsewhere:
            found = self.ledger.read(key)
            if found is None:  # pragma: no cover - rows are never deleted mid-run
                raise CallFailed(key, "missing", "ledger row vanished", kind="unknown") from None
            return self._from_record(found[0])

    def _collected(
        self,
        call: StructuredCall,
        row: CallRecord,
        daemon: Daemon,
        session_id: str,
        age: float,
        started: float,
        unrecorded: UnrecordedAnswers | None,
    ) -> StructuredResult:
        directory = call.directory
        client = daemon.client

        def still_busy() -> bool:
            return session_id in client.busy_sessions(directory=directory)

        # Woken by session.idle (no error recorded), the turn has ended: kodo sends one
        # prompt per session, so nothing can start another. Asked only otherwise.
        ended = row.woken and row.error is None
        busy = not row.woken and still_busy()
        marked = is_over_bound(row.error)  # past its token bound: it must stop
        if (row.woken and not ended and still_busy()) or (busy and marked):
            # Woken by session.error: the idle follows at once; past that, the next
            # event (or the deadline) wakes the step again.
            if marked:  # the collector's abort was not confirmed: asked again here
                abort_turn(client, session_id, directory)
            settle = self.clock.monotonic() + WOKEN_SETTLE_S
            while (busy := still_busy()) and self.clock.monotonic() < settle:
                self.clock.sleep(self.wait_poll_s)
        if busy:
            if age < self.timeout_s:
                left = self.timeout_s - age
                hold = min(ABORT_RETRY_S, left) if marked else left  # marked: asked again
                raise CallPending(call.op_key, session_id, hold, woken=row.woken)
            unstopped = self._stop_overdue(call, row, daemon, age)
            self._refuse_stopped(call, daemon, session_id, started, CallStatus.SENT, not unstopped)
            if row.error is not None and is_over_bound(row.error):
                where = (daemon, session_id, directory)
                sent = CallStatus.SENT
                raise self._bound_refusal(
                    call.op_key, started, row.error, where, sent, unconfirmed=unstopped
                )
            timeout = OpenCodeTimeout(f"no answer within {self.timeout_s:g}s of sending{unstopped}")
            raise self._fail(
                call.op_key,
                started,
                CallStatus.TIMED_OUT,
                timeout,
                None,
                kind="timeout",
                from_status=CallStatus.SENT,
                usage=self._billed(daemon, session_id, directory, None),
            )
        try:
            reply = client.last_message(session_id, directory=directory)
        except OpenCodeError as exc:
            if exc.status == 404:  # the daemon restarted without it: nothing to collect
                lost = SessionLost(f"the call's session is gone from its daemon: {exc}")
                raise self._fail(
                    call.op_key,
                    started,
                    CallStatus.FAILED,
                    lost,
                    None,
                    kind="transient",
                    from_status=CallStatus.SENT,
                ) from exc
            if isinstance(exc, OpenCodeTransientError | OpenCodeTimeout):
                raise  # the daemon cannot say now: collect later (or at the deadline)
            if not isinstance(exc, OpenCodeConfigError) and not is_format_400(exc):
                # an answer kodo refuses to read (too large, too deep, not JSON, a 400)
                sent = CallStatus.SENT
                raise self._unjudged(call, daemon, session_id, started, sent, exc) from exc
            if not is_format_400(exc):  # kodo's own configuration (the daemon's password)
                raise self._fail(
                    call.op_key,
                    started,
                    CallStatus.FAILED,
                    exc,
                    None,
                    kind=_kind_of(exc),
                    from_status=CallStatus.SENT,
                    usage=self._billed(daemon, session_id, directory, None),
                ) from exc
            reply = None  # the daemon's 400 for a range whose newest message is the prompt
        foreign = _foreign_newest(reply, call.op_key)
        if foreign is not None:
            sent = CallStatus.SENT
            raise self._unjudged(call, daemon, session_id, started, sent, foreign)
        if reply is None or reply.info.get("role") != "assistant":
            said = f"; the daemon said: {row.error}" if row.error else ""
            unanswered: OpenCodeError = TurnUnanswered(
                "the sent turn ended without an assistant answer (the daemon failed inside"
                f" it or refused it before it began){said}"
            )
            unanswered = client.diagnose(
                unanswered, directory=directory, agent=call.agent, model=self.model
            )
            raise self._fail(
                call.op_key,
                started,
                CallStatus.FAILED,
                unanswered,
                None,
                kind=_kind_of(unanswered),
                from_status=CallStatus.SENT,
                usage=self._billed(daemon, session_id, directory, None),
            )
        # Idle, yet its last step never completed and no error was said (neither on the
        # message nor by a session.error the collector kept: the daemon writes those
        # onto the message just after it goes idle): the daemon stopped under the turn
        # (killed, then back with its sessions kept).
        cut = row.error is None and not _completed(reply.info)
        try:
            return self._judge(
                call,
                call.op_key,
                daemon,
                session_id,
                reply,
                started,
                CallStatus.SENT,
                unrecorded,
                cut=cut,
                final=age >= self.timeout_s,
                over_bound=row.error if is_over_bound(row.error) else None,
            )
        except _JudgeLater as later:
            if age >= self.timeout_s:  # unreadable until its deadline: judged by nobody
                sent = CallStatus.SENT
                raise self._unjudged(call, daemon, session_id, started, sent, later.cause) from None
            raise later.cause from None  # collected later, or at the deadline (_collect)

    def _refuse_stopped(
        self,
        call: StructuredCall,
        daemon: Daemon,
        session_id: str,
        started: float,
        from_status: CallStatus,
        settled: bool = True,
    ) -> None:
        """Judge a turn cut short (stopped at its deadline, or its answer lost on the way:
        a broken connection, a 5xx) before it is recorded as that: one that broke a turn
        rule is refused under the rule (recorded ``aborted``, as a turn an abort cut is),
        not retried. A model sets its own pace, so a deadline must not spare a turn its
        judgement. ``settled``: the daemon confirmed the turn stopped, so what cannot be
        read is refused unjudged; else (it may still be running) only a broken rule
        seen so far is. A turn the daemon cannot show now (a transient error) is left to
        the caller's own outcome."""
        directory = call.directory
        try:
            reply = self._last_message(daemon, session_id, directory, tries=INSPECT_TRIES)
        except OpenCodeError as exc:
            told = not (_nothing_ran(exc) or _cannot_tell(exc))
            if settled and told and not isinstance(exc, OpenCodeConfigError):
                raise self._unjudged(call, daemon, session_id, started, from_status, exc) from exc
            return
        foreign = _foreign_newest(reply, call.op_key)
        if foreign is not None and settled:
            raise self._unjudged(call, daemon, session_id, started, from_status, foreign)
        if reply is None or reply.info.get("role") != "assistant":
            return  # no step of the turn was written: nothing ran to judge
        prompt_id = prompt_message_id(call.op_key)
        try:
            turn = self._inspect(call, daemon, session_id, reply, from_status, final=True)
        except OpenCodeError as exc:
            if settled and not _cannot_tell(exc):
                raise self._unjudged(call, daemon, session_id, started, from_status, exc) from exc
            return
        earlier = turn.earlier
        unread_now = isinstance(earlier, OpenCodeError) and _cannot_tell(earlier)
        try:
            assert_turn_rules(
                call.agent, session_id, reply, turn, directory=directory, prompt_id=prompt_id
            )
        except TurnRejected as broken:
            if broken.error_name == UNJUDGED and (unread_now or not settled):
                return  # what it shows broke no rule; the rest cannot be read now
            usage = turn_usage(turn, reply) if turn.usage_known else None
            # Unconfirmed, the turn may still be running: recorded timed_out under the
            # rule (in doubt: the next reset of its worktree waits for it), session kept.
            refusal = broken if settled else TurnRejected(
                broken.error_name, f"{broken}; {ABORT_UNCONFIRMED}"
            )  # fmt: skip
            failed = self._fail(
                call.op_key,
                started,
                CallStatus.ABORTED if settled else CallStatus.TIMED_OUT,
                refusal,
                reply,
                kind="refused" if broken.error_name in REFUSED_RULES else "contract",
                name=broken.error_name,
                trail=tool_trail(turn, reply),
                from_status=from_status,
                usage=usage or self._billed(daemon, session_id, directory, reply),
            )
            if settled:
                self._forget(daemon, session_id, directory)
            raise failed from broken

    def _last_message(
        self, daemon: Daemon, session_id: str, directory: str, *, tries: int
    ) -> PromptReply | None:
        """The session's newest message, read up to ``tries`` times while the daemon
        answers with a transient error (a 5xx); one it cannot be reached at is not waited
        on (a dead daemon's overdue calls would hold worker threads)."""
        for attempt in range(1, tries + 1):
            try:
                return daemon.client.last_message(session_id, directory=directory)
            except OpenCodeTransientError as exc:
                if attempt >= tries or _cannot_tell(exc):
                    raise
                self.clock.sleep(INSPECT_RETRY_S * attempt)
        raise AssertionError("unreachable: the last try returns or raises")

    def _inspect(
        self,
        call: StructuredCall,
        daemon: Daemon,
        session_id: str,
        reply: PromptReply,
        from_status: CallStatus,
        final: bool = False,
    ) -> Turn:
        """The turn ``reply`` ends, read for judging. A sent call reads it once (a
        transient failure is read again by a later delivery); a call nothing collects
        later (a blocking one, or ``final``: past its deadline) reads it up to
        INSPECT_TRIES times while the daemon answers a 5xx."""
        prompt_id = prompt_message_id(call.op_key)
        reply_id = str(reply.info.get("id"))
        tries = INSPECT_TRIES if final or from_status is not CallStatus.SENT else 1
        attempt = 1
        while True:
            last = attempt >= tries
            try:
                turn = daemon.turns.inspect(session_id, call.directory, prompt_id, reply_id)
            except OpenCodeTransientError as exc:
                if last or _cannot_tell(exc):
                    raise
            else:
                unread = turn.earlier
                if last or not isinstance(unread, OpenCodeTransientError) or _cannot_tell(unread):
                    return turn
            self.clock.sleep(INSPECT_RETRY_S * attempt)
            attempt += 1

    @staticmethod
    def _judge_later(unread: OpenCodeError, from_status: CallStatus, final: bool) -> None:
        """Raise _JudgeLater if a sent call's turn could not be read for a transient
        reason (the daemon restarting, a 5xx) before its deadline: the collector reads
        it again. Otherwise the caller refuses the turn as unjudged."""
        transient = isinstance(unread, OpenCodeTransientError)
        if from_status is CallStatus.SENT and transient and not final:
            raise _JudgeLater(unread)

    def _unjudged(
        self,
        call: StructuredCall,
        daemon: Daemon,
        session_id: str,
        started: float,
        from_status: CallStatus,
        unread: OpenCodeError,
    ) -> CallFailed:
        """Refuse a turn that ran but whose answer kodo cannot read: what its steps did
        (a read or a write outside its worktree) was never judged, and the model chose
        the answer's size and depth. Recorded ``TurnNotInspectable``, never retried."""
        refusal = TurnRejected(
            UNJUDGED, f"cannot read the turn to judge it: {unread_reason(unread)}"
        )
        failed = self._fail(
            call.op_key,
            started,
            CallStatus.FAILED,
            refusal,
            None,
            kind="refused",
            name=UNJUDGED,
            from_status=from_status,
            usage=self._billed(daemon, session_id, call.directory, None),
        )
        self._forget(daemon, session_id, call.directory)
        return failed

    def _billed(
        self, daemon: Daemon, session_id: str, directory: str, reply: PromptReply | None
    ) -> dict[str, Any] | None:
        """What a failed call's turn was billed: its fresh session's totals (every step
        of the turn, not only the last message: a turn that ran tools for an hour and
        then broke a rule was otherwise billed its last step alone, and the budget
        released the rest), else the reply's own usage, else None. Read only for a
        failure, within BILLED_READ_S (a hung daemon already cost the failure its own
        wait); never raises (a failure is recorded whatever this read does)."""
        try:
            session = daemon.client.get_session(
                session_id, directory=directory, timeout_s=BILLED_READ_S
            )
            totals = usage_of(session)
        except OpenCodeError as exc:
            log.info("oc.totals_unreadable", session_id=session_id, error=str(exc)[:200])
            totals = None
        if totals is not None and totals["total_tokens"]:
            return totals
        return usage_of(reply.info) if reply is not None else None

    def _forget(self, daemon: Daemon, session_id: str | None, directory: str) -> None:
        """Delete a finished call's session from the daemon (its memory grows with every
        session it holds); the ledger keeps what triage needs. A delete the daemon did
        not answer is kept for the reconciler to try again (``forget_later``): a session
        left behind costs memory, never correctness."""
        if session_id is None or self.keep_sessions:
            return
        try:
            daemon.client.delete_session(session_id, directory=directory)
        except OpenCodeError as exc:
            log.info("oc.session_kept", session_id=session_id, error=str(exc)[:200])
            if exc.status != 404:  # (gone already: nothing to delete)
                self.ledger.forget_later(session_id, daemon.url or None, directory, str(exc))

    def reject(self, op_key: str, reason: str) -> None:
        """Record why the step did not use the answer; a replay reads the same verdict back
        (it is quoted in the next attempt's prompt, so it must not be recomputed)."""
        self.ledger.note_rejected(op_key, reason)
        hit = self.l1.get(op_key)
        if hit is not None:
            self.l1.put(op_key, {**hit, "rejected": reason})

    def quiesce(self, run_id: str, step_id: str, directory: str) -> None:
        """Return once no earlier call of the step is running on ``directory``.

        The sessions the ledger cannot vouch for (claimed elsewhere, unknown, timed out)
        are aborted, then ``GET /session/status`` is polled until none is busy; one still
        busy after ``quiesce_s`` raises WorktreeBusy (rule ``worktree_quiet``): a
        worktree is never reset under a daemon that may still be editing it.
        """
        doubtful = sorted(set(self.ledger.sessions_in_doubt(run_id, step_id)), key=str)
        if not doubtful:
            return
        daemons = {self.pool.of(url).url: self.pool.of(url) for _, url in doubtful}
        for session_id, url in doubtful:
            abort_turn(self.pool.of(url).client, session_id, directory)  # the wait judges
        ids = {session_id for session_id, _ in doubtful}
        deadline = self.clock.monotonic() + self.quiesce_s
        while True:
            busy = sorted(
                ids
                & {
                    sid
                    for daemon in daemons.values()
                    for sid in daemon.client.busy_sessions(directory=directory)
                }
            )
            if not busy:
                return
            if self.clock.monotonic() > deadline:
                raise WorktreeBusy(
                    f"worktree_quiet: session {', '.join(busy)} of an earlier call is still"
                    f" busy on {directory} after abort; not resetting it"
                )
            self.clock.sleep(self.wait_poll_s)

    # -- a claim lost to an earlier (or concurrent) caller ---------------------------

    def _recorded(
        self,
        call: StructuredCall,
        first: AgedRecord | None = None,
        unrecorded: UnrecordedAnswers | None = None,
    ) -> StructuredResult:
        """Return what the ledger recorded for the call, waiting out a live claim and
        collecting a sent call's answer (``first``: the row the lost claim read)."""
        key = call.op_key
        patience = self.timeout_s + self.claim_grace_s
        deadline = self.clock.monotonic() + patience
        while True:
            found, first = first or self.ledger.read(key), None
            if found is None:  # pragma: no cover - the claim conflict proves it exists
                raise CallFailed(key, "missing", "ledger row vanished", kind="unknown")
            row, age = found  # aged by the ledger's clock: another host wrote the claim
            if row.status == CallStatus.SENT:
                return self._collect(call, row, age, unrecorded)
            if row.status != CallStatus.CLAIMED:
                return self._from_record(row)
            # A claim older than any live call could be belongs to a dead worker.
            overdue = self.clock.monotonic() > deadline or age > patience
            if self.async_calls:
                if not overdue:  # park, rather than hold a thread while it may finish
                    raise CallPending(key, row.session_id or "", patience - age, woken=row.woken)
                if row.session_id is not None and self.ledger.mark_sent(key):
                    # Its claimant died after making the session, maybe after sending:
                    # collect what the session holds (an answer, or a turn that never
                    # came, which fails unpaid) instead of declaring the call unknown.
                    log.warning("oc.claim_collected", op_key=key, session_id=row.session_id)
                    continue
            if overdue and row.session_id is None:
                if self._give_up_unsent(key):
                    raise CallFailed(
                        key,
                        CallStatus.FAILED,
                        NEVER_SENT_ERROR,
                        error_name=NEVER_SENT,
                        kind="unknown",
                    )
                continue  # started or finished meanwhile: read again
            if overdue:
                return self._declare_unknown(key)
            self.clock.sleep(self.wait_poll_s)

    def _from_record(self, row: CallRecord) -> StructuredResult:
        if row.status != CallStatus.SUCCEEDED or row.response is None:
            late_refusal = CallStatus(row.status).is_late and row.error_name in REFUSED_RULES
            if late_refusal:  # it broke a rule after all: the step fails closed on it now
                raise CallFailed(
                    row.op_key,
                    row.status,
                    row.error or "refused",
                    error_name=row.error_name or UNJUDGED,
                    kind="refused",
                    replayed=True,
                )
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
        self.l1.put(row.op_key, {"answer": answer, "usage": usage, "rejected": row.rejected})
        return StructuredResult(row.op_key, answer, "l2", usage, row.rejected)

    def _give_up_unsent(self, key: str) -> bool:
        """Record an overdue claim that has no session ``failed`` as never sent, at no
        cost (see CallLedger.finish_unsent); False if it has one by now, or ended."""
        gave_up = CallOutcome(
            CallStatus.FAILED,
            self.clock.now(),
            duration_ms=None,
            error_name=NEVER_SENT,
            error=NEVER_SENT_ERROR,
        )
        if not self.ledger.finish_unsent(key, gave_up):
            return False
        log.warning("oc.claim_never_sent", op_key=key)
        return True

    def _declare_unknown(self, key: str) -> StructuredResult:
        declared = CallOutcome(
            CallStatus.UNKNOWN,
            self.clock.now(),
            duration_ms=None,
            error_name="OutcomeUnknown",
            error=UNKNOWN_ERROR,
        )
        self.ledger.finish(key, declared)
        found = self.ledger.read(key)
        if found is not None and found[0].status != CallStatus.UNKNOWN:
            return self._from_record(found[0])  # it finished while we declared
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
        trail: list[dict[str, Any]] | None = None,
        from_status: CallStatus = CallStatus.CLAIMED,
        usage: dict[str, Any] | None = None,
    ) -> CallFailed:
        """Record a failed call; ``usage``: what its turn was billed (:meth:`_billed`),
        else the reply's own usage, if there is a reply.

        A turn refused under a turn rule (TurnRejected) keeps nothing the model said
        (:func:`withheld_record`): it may have read what it must not (another run's
        worktree, the daemon's tool-output folder) and said it back. Its error is kodo's
        refusal, whose quotes of model-chosen text are bounded where it is made."""
        error_name = name or type(exc).__name__
        withheld = isinstance(exc, TurnRejected)
        error = bounded_error(redact_text(f"{error_name}: {exc}"))
        if usage is None and reply is not None:
            usage = usage_of(reply.info)
        recorded = (
            None
            if reply is None
            else redact(withheld_record(reply, usage, trail))
            if withheld
            else self._response_record(reply, usage, trail)
        )
        self._record(
            key,
            status,
            started,
            response=bounded_record(recorded) if recorded is not None else None,
            usage=usage,
            error_name=error_name,
            error=error,
            from_status=from_status,
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
        from_status: CallStatus = CallStatus.CLAIMED,
    ) -> None:
        """Record the claimant's outcome, or raise CallSuperseded if it came too late.

        A sent call's outcome is recorded by whichever delivery collects it first; a
        second collector raises _CollectedElsewhere and reads the first one's back.

        A row another delivery declared ``unknown`` meanwhile gets the outcome as
        ``succeeded_late`` or ``failed_late`` (the call was paid: its answer and usage
        are kept), and this delivery stops without using it.
        """
        late = (
            CallStatus.SUCCEEDED_LATE if status is CallStatus.SUCCEEDED else CallStatus.FAILED_LATE
        )
        outcome = self._outcome(
            status, started, response=response, usage=usage, error_name=error_name, error=error
        )
        if self.ledger.finish(key, outcome, from_status=from_status):
            return
        if from_status is CallStatus.SENT:
            raise _CollectedElsewhere(key)
        recorded = self.ledger.finish(
            key, replace(outcome, status=late), from_status=CallStatus.UNKNOWN
        )
        found_row = self.ledger.read(key)
        found = found_row[0].status if found_row is not None else "gone"
        log.warning("oc.call_late", op_key=key, status=status.value, recorded=recorded, row=found)
        raise CallSuperseded(
            f"provider call {key[:12]} finished ({status}) after another delivery declared it"
            f" unknown: recorded {found}, not used (rule: a run acts on one outcome per op_key)"
        )

    def _outcome(
        self,
        status: CallStatus,
        started: float,
        *,
        response: dict[str, Any] | None,
        usage: dict[str, Any] | None,
        error_name: str | None = None,
        error: str | None = None,
    ) -> CallOutcome:
        return CallOutcome(
            status,
            self.clock.now(),
            self._elapsed_ms(started),
            response=response,
            usage=usage,
            error_name=error_name,
            error=error,
        )

    def _stop_overdue(
        self, call: StructuredCall, row: CallRecord, daemon: Daemon, age: float
    ) -> str:
        """Abort an overdue call's turn before it is settled ``timed_out``; return what
        its error must add ("" once the daemon confirmed the abort).

        A turn whose abort failed may still be running, and spending: settled at once,
        its cost would never be read. So, parked (asynchronous calls), the call stays
        ``sent`` and its step tries again in ABORT_RETRY_S (CallPending) until
        ``abort_window_s`` past the deadline; a turn that ends meanwhile is collected
        as any other. Past the window the call is settled all the same, its error
        saying the turn may still be running (the row names the daemon and session:
        the error text is quoted to the model in the next attempt's prompt). A turn the
        collector saw end (``session.idle``) runs no more: nothing is retried for it.
        """
        session_id = row.session_id or ""
        if abort_turn(daemon.client, session_id, call.directory):
            return ""
        if row.woken and row.error is None:
            return ""
        if self.async_calls and age < self.timeout_s + self.abort_window_s:
            log.warning("oc.abort_unconfirmed", op_key=call.op_key, session_id=session_id)
            raise CallPending(call.op_key, session_id, ABORT_RETRY_S, woken=row.woken)
        return f"; {ABORT_UNCONFIRMED}"

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
            "messageID": prompt_message_id(call.op_key),  # what every answer must name
        }

    @staticmethod
    def _response_record(
        reply: PromptReply, usage: dict[str, Any] | None, trail: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """What the ledger keeps of an answered call, redacted; ``tools`` is every tool
        use of the turn (tool, status, the paths it named), since its session is deleted
        after. ``structured`` is the redacted ``info``'s own answer, not redacted again
        (a patch answer's text is most of the record, and each scan of it is paid)."""
        info = redact(reply.info)
        record = {
            "info": info,
            "parts": redact(reply.parts),
            "structured": info.get("structured"),
            "usage": redact(usage),
        }
        return record if trail is None else {**record, "tools": redact(trail)}
