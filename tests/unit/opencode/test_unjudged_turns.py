"""No route records a hostile turn as an ordinary failure, to be retried, with its steps
unjudged (red-team pass 3, on 9b60d43: each case failed then).

A turn that read another run's file, then answered well, is refused whichever way its
answer fails to arrive: a 400 that is not the daemon's format 400, a body kodo cannot
parse, a broken connection after the turn ran, a deadline with or without a confirmed
abort, a turn unreadable until its deadline, a session someone else went on with. And
a daemon's passing 5xx neither fails an honest blocking call closed nor has a woken
call redelivered in a loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.vocab import CallStatus
from shared.opencode.cache import LruCache
from shared.opencode.calls import CallFailed, CallPending, StructuredCall
from shared.opencode.errors import (
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTransientError,
)
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef, PromptReply
from tests.fakes.agent import FakeAgent, ScriptedTurn, no_answer_in_time, tokens
from tests.fakes.ledger import InMemoryLedger

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
MODEL = ModelRef("kodo", "kodo-scripted")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT_S = 60.0
ESCAPE = "read@/elsewhere/other-run/secret"
SECRET = "OTHER-RUNS-SECRET"  # noqa: S105 - a marker, not a credential


def _calls(agent: FakeAgent, ledger: InMemoryLedger, *, async_calls: bool) -> ExactlyOnceCalls:
    return ExactlyOnceCalls(
        agent,
        ledger,
        FixedClock(NOW),
        model=MODEL,
        timeout_s=TIMEOUT_S,
        l1=LruCache(),
        async_calls=async_calls,
        daemon="http://oc-1",
        wait_poll_s=0.0,
    )


def _call(agent: str = "plan") -> StructuredCall:
    return StructuredCall("run-1", "DecideST", 1, agent, "choose", BUILD_OUTPUT_SCHEMA, "/w")


def _escaping_turn(**kw: Any) -> ScriptedTurn:
    """A turn that read another run's file on the way, then answered well."""
    return ScriptedTurn(answer=ANSWER, session_tokens=tokens(50), earlier_tools=[ESCAPE], **kw)


# -- fakes ------------------------------------------------------------------------------


class _RanThenBroke(FakeAgent):
    """A blocking prompt whose turn RAN (its steps are in the session, its answer is the
    session's newest message), but whose HTTP answer kodo never got whole: ``after``
    is raised instead (a broken connection, a body kodo cannot parse, a timeout)."""

    def __init__(self, after: OpenCodeError, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.after = after

    def prompt(self, session_id: str, **kw: Any) -> PromptReply:
        reply = super().prompt(session_id, **kw)
        reply.info.setdefault("time", {"created": 1, "completed": 2})
        self.replies[session_id] = reply  # the daemon keeps the turn
        raise self.after


class _AsyncRanThenBroke(FakeAgent):
    """prompt_async: the daemon took the prompt and ran the turn, then the connection
    broke before its 204 reached kodo."""

    def prompt_async(self, session_id: str, **kw: Any) -> None:
        super().prompt_async(session_id, **kw)
        raise OpenCodeTransientError("POST prompt_async: RemoteProtocolError: peer closed")


def _held(turn: ScriptedTurn) -> FakeAgent:
    agent = FakeAgent(turn)
    agent.hold_async = True
    return agent


def _send(agent: FakeAgent, ledger: InMemoryLedger) -> CallPending:
    with pytest.raises(CallPending) as pending:
        _calls(agent, ledger, async_calls=True).prompt_structured(_call())
    assert ledger.mark_sent(pending.value.op_key)
    return pending.value


def _fail(agent: FakeAgent, ledger: InMemoryLedger, *, async_calls: bool) -> CallFailed:
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger, async_calls=async_calls).prompt_structured(_call())
    return failed.value


def _bad_request(said: str) -> OpenCodePermanentError:
    """A daemon 400 on a listing that is NOT the format 400 that marks a turn's start
    (client.FORMAT_400); the client's own docs and test_exactly_once._UnlistedTurn
    model such a 400 quoting a message's text."""
    return OpenCodePermanentError(
        f"HTTP 400 BadRequest: Expected string, got {said}",
        status=400,
        name="BadRequest",
        data={"message": f"Expected string, got {said}"},
    )


# -- a 400 that is not the daemon's format 400 -----------------------------------------


def test_a_collected_turn_whose_last_message_is_a_400_not_the_format_one_is_refused() -> None:
    """Only the daemon's format 400 means 'the newest message is the prompt'; any other
    400 (one quoting the model's text) is a turn kodo cannot read: refused."""
    agent = _held(_escaping_turn())
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)

    def bad_request(session_id: str, *, directory: str) -> PromptReply | None:
        raise _bad_request(SECRET)

    agent.last_message = bad_request  # type: ignore[method-assign]
    failed = _fail(agent, ledger, async_calls=True)
    assert (failed.error_name, failed.kind) == ("TurnNotInspectable", "refused"), (
        f"recorded {failed.error_name}/{failed.kind}: retried, its steps never judged"
    )


def test_a_stopped_turn_whose_last_message_is_a_400_not_the_format_one_is_refused() -> None:
    """The same rule for a turn stopped at its deadline: judged before it is settled
    timed out."""
    agent = _held(_escaping_turn())
    ledger = InMemoryLedger()
    _send(agent, ledger)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1

    def bad_request(session_id: str, *, directory: str) -> PromptReply | None:
        raise _bad_request(SECRET)

    agent.last_message = bad_request  # type: ignore[method-assign]
    failed = _fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a blocking answer kodo cannot parse -----------------------------------------------


@pytest.mark.parametrize(
    "after",
    [
        OpenCodePermanentError(f'POST /session/x/message: body is not JSON: {{"x":"{SECRET}'),
        OpenCodePermanentError("prompt reply parts is not a list of objects"),
    ],
    ids=["not-json", "misshapen-reply"],
)
def test_a_blocking_answer_kodo_cannot_parse_is_refused_quoting_none_of_it(
    after: OpenCodePermanentError,
) -> None:
    """A body that is not JSON, or a reply of the wrong shape, is a turn kodo cannot
    judge: refused, never retried, and its error quotes none of the body (the model's
    text), only the kind of failure."""
    ledger = InMemoryLedger()
    failed = _fail(_RanThenBroke(after, _escaping_turn()), ledger, async_calls=False)
    row = ledger.rows[_call().op_key].record
    assert (failed.kind, failed.retryable) == ("refused", False), (
        f"recorded {row.error_name}/{failed.kind}, retryable={failed.retryable}"
    )
    assert SECRET not in (row.error or "")


# -- a turn that ran, whose connection then broke --------------------------------------


def test_a_blocking_turn_cut_by_a_broken_connection_is_judged_and_refused() -> None:
    """A transient error without a reply (a broken connection, a proxy's 502): the turn
    ran, so it is stopped and judged before the failure is recorded."""
    after = OpenCodeTransientError("POST /session/x/message: RemoteProtocolError: peer closed")
    agent = _RanThenBroke(after, _escaping_turn())
    ledger = InMemoryLedger()
    failed = _fail(agent, ledger, async_calls=False)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


def test_an_async_turn_that_ran_before_the_send_broke_is_judged_and_refused() -> None:
    """prompt_async raised after the daemon took the prompt: the turn ran, so it is
    stopped and judged before the send's failure is recorded."""
    agent = _AsyncRanThenBroke(_escaping_turn())
    ledger = InMemoryLedger()
    failed = _fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a blocking call reads a turn again after a passing 5xx ----------------------------


class _ChildrenHiccup(FakeAgent):
    def __init__(self, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.failures = 1

    def session_children(self, session_id: str, *, directory: str) -> list[dict[str, Any]]:
        if self.failures:
            self.failures -= 1
            raise OpenCodeServerError("HTTP 500 (fake): children, once", status=500)
        return super().session_children(session_id, directory=directory)


class _MessagesHiccup(FakeAgent):
    def __init__(self, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.failures = 1

    def earlier_turn_messages(self, session_id: str, **kw: Any) -> list[dict[str, Any]]:
        if self.failures:
            self.failures -= 1
            raise OpenCodeServerError("HTTP 500 (fake): messages, once", status=500)
        return super().earlier_turn_messages(session_id, **kw)


@pytest.mark.parametrize("hiccup", [_MessagesHiccup, _ChildrenHiccup], ids=["messages", "children"])
def test_one_daemon_5xx_reading_an_honest_blocking_turn_does_not_fail_it(
    hiccup: type[FakeAgent],
) -> None:
    """Nothing collects a blocking call later (OC_ASYNC=0): it reads the turn again."""
    agent = hiccup(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50)))
    ledger = InMemoryLedger()
    result = _calls(agent, ledger, async_calls=False).prompt_structured(_call())
    assert result.answer == ANSWER
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED


# -- a woken call deferred parks as woken ----------------------------------------------


def test_a_woken_call_whose_turn_cannot_be_read_now_parks_as_woken() -> None:
    """A woken call parks as woken, to try again in JUDGE_RETRY_S: parked as not woken,
    the park would find the call no longer awaiting collection and re-send the step at
    once, in a loop until the deadline, re-reading the session from a failing daemon."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50), earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    assert not ledger.awaits_collection(_call().op_key)  # park_on_call would say "wake"
    with pytest.raises(CallPending) as again:
        _calls(agent, ledger, async_calls=True).prompt_structured(_call())
    assert again.value.woken, "parked as not woken: the park re-sends the step at once"


# -- a timed-out turn whose abort went unconfirmed -------------------------------------


def _abort_fails(agent: FakeAgent) -> None:
    def refusing(session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        raise OpenCodeServerError("HTTP 500 (fake): abort", status=500)

    agent.abort = refusing  # type: ignore[method-assign]


def test_a_blocking_timed_out_turn_whose_abort_failed_is_judged_and_refused() -> None:
    """The steps already written are judged even when the abort went unconfirmed: a
    rule broken so far is final, whatever runs after it."""
    agent = _RanThenBroke(no_answer_in_time(), _escaping_turn())
    _abort_fails(agent)
    ledger = InMemoryLedger()
    failed = _fail(agent, ledger, async_calls=False)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a turn unreadable until its deadline ----------------------------------------------


def test_an_ended_turn_unreadable_until_its_deadline_is_refused_unjudged() -> None:
    """The daemon could not show the ended turn until its deadline: judged by nobody,
    so refused, not timed out and retried."""
    agent = _held(_escaping_turn(earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    failed = _fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a newest message that is a user message kodo did not send -------------------------


def test_a_turn_continued_by_a_user_message_kodo_did_not_send_is_refused() -> None:
    """The newest message is a user message kodo never sent: someone went on with the
    session, and the steps before it ran unjudged (earlier_turn_messages refuses the
    same shape)."""
    agent = _held(_escaping_turn())
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    foreign = PromptReply(
        info={"id": "msg_zzzzforeign", "role": "user", "sessionID": pending.session_id},
        parts=[{"type": "text", "text": "continue"}],
    )
    agent.replies[pending.session_id] = foreign
    failed = _fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- routes a red-team pass found sound ------------------------------------------------


def test_sync_timed_out_turn_with_confirmed_abort_is_judged_and_refused() -> None:
    agent = _RanThenBroke(no_answer_in_time(), _escaping_turn())
    ledger = InMemoryLedger()
    failed = _fail(agent, ledger, async_calls=False)
    row = ledger.rows[_call().op_key].record
    assert (failed.error_name, failed.kind, row.status) == (
        "PathOutsideWorktree",
        "refused",
        CallStatus.ABORTED,
    )


def test_a_refused_row_replays_refused_and_withheld() -> None:
    agent = FakeAgent(_escaping_turn())
    agent.will()
    ledger = InMemoryLedger()
    _fail(agent, ledger, async_calls=False)
    replay = _fail(agent, ledger, async_calls=False)
    assert (replay.kind, replay.replayed, replay.retryable) == ("refused", True, False)
    assert len(agent.sent) == 1


def test_async_collected_answer_kodo_cannot_parse_is_refused() -> None:
    agent = _held(_escaping_turn())
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)

    def not_json(session_id: str, *, directory: str) -> PromptReply | None:
        raise OpenCodePermanentError(f"GET messages: body is not JSON: {SECRET}")

    agent.last_message = not_json  # type: ignore[method-assign]
    failed = _fail(agent, ledger, async_calls=True)
    row = ledger.rows[_call().op_key].record
    assert (failed.kind, row.response) == ("refused", None)


def test_transient_step_read_then_escape_is_refused_once_readable() -> None:
    agent = _held(_escaping_turn(earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    with pytest.raises(CallPending):
        _calls(agent, ledger, async_calls=True).prompt_structured(_call())
    assert ledger.status(_call().op_key) == CallStatus.SENT
    turn = agent.sessions[pending.session_id]
    assert turn is not None
    turn.earlier_unreadable = False
    failed = _fail(agent, ledger, async_calls=True)
    assert (failed.error_name, failed.kind) == ("PathOutsideWorktree", "refused")
