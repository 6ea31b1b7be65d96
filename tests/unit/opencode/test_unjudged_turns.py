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

from typing import Any

import pytest

from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallPending
from shared.opencode.errors import (
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTransientError,
)
from shared.opencode.messages import PromptReply
from tests.fakes.agent import FakeAgent, ScriptedTurn, no_answer_in_time, tokens
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.hostile_turns import (
    ANSWER,
    SECRET,
    TIMEOUT_S,
    MessagesHiccup,
    RanThenBroke,
    bad_request,
    calls,
    escaping_turn,
    fail,
    held,
    send,
    the_call,
)

# -- fakes ------------------------------------------------------------------------------


class _AsyncRanThenBroke(FakeAgent):
    """prompt_async: the daemon took the prompt and ran the turn, then the connection
    broke before its 204 reached kodo."""

    def prompt_async(self, session_id: str, **kw: Any) -> None:
        super().prompt_async(session_id, **kw)
        raise OpenCodeTransientError("POST prompt_async: RemoteProtocolError: peer closed")


# -- a 400 that is not the daemon's format 400 -----------------------------------------


def test_a_collected_turn_whose_last_message_is_a_400_not_the_format_one_is_refused() -> None:
    """Only the daemon's format 400 means 'the newest message is the prompt'; any other
    400 (one quoting the model's text) is a turn kodo cannot read: refused."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)

    def answers_400(session_id: str, *, directory: str) -> PromptReply | None:
        raise bad_request(SECRET)

    agent.last_message = answers_400  # type: ignore[method-assign]
    failed = fail(agent, ledger, async_calls=True)
    assert (failed.error_name, failed.kind) == ("TurnNotInspectable", "refused"), (
        f"recorded {failed.error_name}/{failed.kind}: retried, its steps never judged"
    )


def test_a_stopped_turn_whose_last_message_is_a_400_not_the_format_one_is_refused() -> None:
    """The same rule for a turn stopped at its deadline: judged before it is settled
    timed out."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    send(agent, ledger)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1

    def answers_400(session_id: str, *, directory: str) -> PromptReply | None:
        raise bad_request(SECRET)

    agent.last_message = answers_400  # type: ignore[method-assign]
    failed = fail(agent, ledger, async_calls=True)
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
    failed = fail(RanThenBroke(after, escaping_turn()), ledger, async_calls=False)
    row = ledger.rows[the_call().op_key].record
    assert (failed.kind, failed.retryable) == ("refused", False), (
        f"recorded {row.error_name}/{failed.kind}, retryable={failed.retryable}"
    )
    assert SECRET not in (row.error or "")


# -- a turn that ran, whose connection then broke --------------------------------------


def test_a_blocking_turn_cut_by_a_broken_connection_is_judged_and_refused() -> None:
    """A transient error without a reply (a broken connection, a proxy's 502): the turn
    ran, so it is stopped and judged before the failure is recorded."""
    after = OpenCodeTransientError("POST /session/x/message: RemoteProtocolError: peer closed")
    agent = RanThenBroke(after, escaping_turn())
    ledger = InMemoryLedger()
    failed = fail(agent, ledger, async_calls=False)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


def test_an_async_turn_that_ran_before_the_send_broke_is_judged_and_refused() -> None:
    """prompt_async raised after the daemon took the prompt: the turn ran, so it is
    stopped and judged before the send's failure is recorded."""
    agent = _AsyncRanThenBroke(escaping_turn())
    ledger = InMemoryLedger()
    failed = fail(agent, ledger, async_calls=True)
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


@pytest.mark.parametrize("hiccup", [MessagesHiccup, _ChildrenHiccup], ids=["messages", "children"])
def test_one_daemon_5xx_reading_an_honest_blocking_turn_does_not_fail_it(
    hiccup: type[FakeAgent],
) -> None:
    """Nothing collects a blocking call later (OC_ASYNC=0): it reads the turn again."""
    agent = hiccup(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50)))
    ledger = InMemoryLedger()
    result = calls(agent, ledger, async_calls=False).prompt_structured(the_call())
    assert result.answer == ANSWER
    assert ledger.status(the_call().op_key) == CallStatus.SUCCEEDED


# -- a woken call deferred parks as woken ----------------------------------------------


def test_a_woken_call_whose_turn_cannot_be_read_now_parks_as_woken() -> None:
    """A woken call parks as woken, to try again in JUDGE_RETRY_S: parked as not woken,
    the park would find the call no longer awaiting collection and re-send the step at
    once, in a loop until the deadline, re-reading the session from a failing daemon."""
    agent = held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50), earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    assert not ledger.awaits_collection(the_call().op_key)  # park_on_call would say "wake"
    with pytest.raises(CallPending) as again:
        calls(agent, ledger, async_calls=True).prompt_structured(the_call())
    assert again.value.woken, "parked as not woken: the park re-sends the step at once"


# -- a timed-out turn whose abort went unconfirmed -------------------------------------


def _abort_fails(agent: FakeAgent) -> None:
    def refusing(session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        raise OpenCodeServerError("HTTP 500 (fake): abort", status=500)

    agent.abort = refusing  # type: ignore[method-assign]


def test_a_blocking_timed_out_turn_whose_abort_failed_is_judged_and_refused() -> None:
    """The steps already written are judged even when the abort went unconfirmed: a
    rule broken so far is final, whatever runs after it."""
    agent = RanThenBroke(no_answer_in_time(), escaping_turn())
    _abort_fails(agent)
    ledger = InMemoryLedger()
    failed = fail(agent, ledger, async_calls=False)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a turn unreadable until its deadline ----------------------------------------------


def test_an_ended_turn_unreadable_until_its_deadline_is_refused_unjudged() -> None:
    """The daemon could not show the ended turn until its deadline: judged by nobody,
    so refused, not timed out and retried."""
    agent = held(escaping_turn(earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1
    failed = fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- a newest message that is a user message kodo did not send -------------------------


def test_a_turn_continued_by_a_user_message_kodo_did_not_send_is_refused() -> None:
    """The newest message is a user message kodo never sent: someone went on with the
    session, and the steps before it ran unjudged (earlier_turn_messages refuses the
    same shape)."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    foreign = PromptReply(
        info={"id": "msg_zzzzforeign", "role": "user", "sessionID": pending.session_id},
        parts=[{"type": "text", "text": "continue"}],
    )
    agent.replies[pending.session_id] = foreign
    failed = fail(agent, ledger, async_calls=True)
    assert failed.kind == "refused", f"recorded {failed.error_name}/{failed.kind}: retried"


# -- routes a red-team pass found sound ------------------------------------------------


def test_sync_timed_out_turn_with_confirmed_abort_is_judged_and_refused() -> None:
    agent = RanThenBroke(no_answer_in_time(), escaping_turn())
    ledger = InMemoryLedger()
    failed = fail(agent, ledger, async_calls=False)
    row = ledger.rows[the_call().op_key].record
    assert (failed.error_name, failed.kind, row.status) == (
        "PathOutsideWorktree",
        "refused",
        CallStatus.ABORTED,
    )


def test_a_refused_row_replays_refused_and_withheld() -> None:
    agent = FakeAgent(escaping_turn())
    agent.will()
    ledger = InMemoryLedger()
    fail(agent, ledger, async_calls=False)
    replay = fail(agent, ledger, async_calls=False)
    assert (replay.kind, replay.replayed, replay.retryable) == ("refused", True, False)
    assert len(agent.sent) == 1


def test_async_collected_answer_kodo_cannot_parse_is_refused() -> None:
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)

    def not_json(session_id: str, *, directory: str) -> PromptReply | None:
        raise OpenCodePermanentError(f"GET messages: body is not JSON: {SECRET}")

    agent.last_message = not_json  # type: ignore[method-assign]
    failed = fail(agent, ledger, async_calls=True)
    row = ledger.rows[the_call().op_key].record
    assert (failed.kind, row.response) == ("refused", None)


def test_transient_step_read_then_escape_is_refused_once_readable() -> None:
    agent = held(escaping_turn(earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    with pytest.raises(CallPending):
        calls(agent, ledger, async_calls=True).prompt_structured(the_call())
    assert ledger.status(the_call().op_key) == CallStatus.SENT
    turn = agent.sessions[pending.session_id]
    assert turn is not None
    turn.earlier_unreadable = False
    failed = fail(agent, ledger, async_calls=True)
    assert (failed.error_name, failed.kind) == ("PathOutsideWorktree", "refused")
