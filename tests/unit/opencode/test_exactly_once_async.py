"""The exactly-once protocol in asynchronous mode: send, park, collect, or time out.

No thread waits on the model: the sending delivery raises CallPending once the daemon
took the prompt; a later delivery collects the answer from the session's last message
and judges and records it as a blocking call's would be.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.call_record import StepLedger
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.domain.turn_spend import Spent, over_bound_error
from shared.domain.vocab import CallStatus
from shared.opencode.cache import LruCache
from shared.opencode.calls import (
    CallFailed,
    CallOutcome,
    CallPending,
    CallSuperseded,
    StructuredCall,
    UnrecordedAnswers,
)
from shared.opencode.errors import OpenCodeError, OpenCodeServerError
from shared.opencode.exactly_once import ABORT_RETRY_S, ABORT_S, ABORT_WINDOW_S, ExactlyOnceCalls
from shared.opencode.messages import ModelRef, PromptReply, prompt_message_id
from tests.fakes.agent import FakeAgent, ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
MODEL = ModelRef("kodo", "kodo-scripted")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT_S = 60.0


def _calls(
    agent: FakeAgent, ledger: InMemoryLedger, *, async_calls: bool = True
) -> ExactlyOnceCalls:
    """A worker's protocol in asynchronous mode (each has its own L1); blocking if not
    ``async_calls``."""
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


def _call(attempt: int = 1) -> StructuredCall:
    return StructuredCall("run-1", "DecideST", attempt, "plan", "choose", BUILD_OUTPUT_SCHEMA, "/w")


def _held(turn: ScriptedTurn) -> FakeAgent:
    agent = FakeAgent(turn)
    agent.hold_async = True
    return agent


def _send(agent: FakeAgent, ledger: InMemoryLedger) -> CallPending:
    """Send the call and record it sent, as the runner does when it parks the step."""
    with pytest.raises(CallPending) as pending:
        _calls(agent, ledger).prompt_structured(_call())
    assert pending.value.unrecorded
    assert ledger.mark_sent(pending.value.op_key)
    return pending.value


def test_a_sent_call_parks_the_step_with_its_session_and_the_time_left() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    row = ledger.rows[_call().op_key]
    assert row.record.status == CallStatus.SENT
    assert (row.session_id, row.daemon) == (pending.session_id, "http://oc-1")
    assert pending.hold_s == TIMEOUT_S
    assert not pending.woken
    assert len(agent.sent) == 1


def test_a_delivery_before_the_turn_ends_parks_again_without_sending() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    ledger.rows[_call().op_key].age_s = 20.0
    with pytest.raises(CallPending) as again:
        _calls(agent, ledger).prompt_structured(_call())
    assert again.value.hold_s == TIMEOUT_S - 20.0
    assert len(agent.sent) == 1
    assert ledger.status(_call().op_key) == CallStatus.SENT


def test_the_answer_is_collected_judged_and_recorded_once_the_session_ends() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    woken = _calls(agent, ledger)  # another worker: nothing of the call in its memory
    result = woken.prompt_structured(_call())
    assert (result.answer, result.usage["total_tokens"]) == (ANSWER, 70)
    row = ledger.rows[_call().op_key].record
    assert row.status == CallStatus.SUCCEEDED
    assert row.response is not None
    assert row.response["structured"] == ANSWER
    assert agent.deleted == [pending.session_id]  # forgotten once recorded
    replay = _calls(agent, ledger).prompt_structured(_call())
    assert (replay.cache, replay.answer) == ("l2", ANSWER)
    assert len(agent.sent) == 1


def test_a_missed_wake_up_is_collected_by_the_next_delivery_that_finds_the_session_idle() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)  # no wake recorded: the collector was down
    assert _calls(agent, ledger).prompt_structured(_call()).answer == ANSWER


def test_an_answer_against_the_schema_is_recorded_failed_as_a_contract_failure() -> None:
    agent = _held(ScriptedTurn(answer={"next_action": "nonsense"}, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.kind, failed.value.error_name) == ("contract", "ContractViolation")
    assert ledger.status(_call().op_key) == CallStatus.FAILED


def _collect_unfinished(turn: ScriptedTurn, said: str | None = None) -> tuple[CallFailed, str]:
    """Send ``turn``, end it with its last message unfinished (no ``time.completed``,
    what a daemon killed mid-turn and restarted lists), wake it (with the collector's
    ``session.error``, if ``said``) and collect it: the failure and the call's status."""
    agent, ledger = _held(turn), InMemoryLedger()
    pending = _send(agent, ledger)
    agent.held[pending.session_id][1].info["time"] = {"created": 1}
    agent.release(pending.session_id)
    ledger.wake(pending.session_id, error=said)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    return failed.value, ledger.status(_call().op_key)


def test_an_idle_turn_whose_last_step_never_completed_is_lost_not_a_contract_failure() -> None:
    """A daemon killed mid-turn that kept its sessions shows the turn idle, its last
    assistant message with no ``time.completed`` and no error: the step the kill cut is
    in no totals, so the call is recorded cut short (TurnLost: the settle spends at
    least its reservation) and asked again, not judged as a wrong answer."""
    failed, status = _collect_unfinished(ScriptedTurn(answer=None, session_tokens=tokens(19)))
    assert (failed.kind, failed.error_name, status) == ("transient", "TurnLost", CallStatus.FAILED)


def test_a_cut_turn_that_broke_a_rule_is_refused_for_it_and_recorded_aborted() -> None:
    """The rule outranks the cut, and the record still says cut: ``aborted`` (the settle
    spends at least the reservation), under the rule's name."""
    turn = ScriptedTurn(answer=None, tools=["bash"], session_tokens=tokens(19))
    failed, status = _collect_unfinished(turn)
    assert (failed.kind, failed.error_name) == ("contract", "ToolNotAllowed")
    assert status == CallStatus.ABORTED


def test_an_unfinished_message_after_a_session_error_is_not_taken_for_a_cut_turn() -> None:
    """The daemon goes idle on an error before it writes the error (and the completion)
    onto the message: a step woken by that session.error may read the message first.
    The error the collector kept says the turn was not cut, so it is not billed as one."""
    turn = ScriptedTurn(answer=None, session_tokens=tokens(19))
    failed, _status = _collect_unfinished(turn, said="APIError: the provider refused the key")
    assert failed.error_name != "TurnLost"


def test_a_turn_that_ended_without_an_answer_fails_and_is_not_waited_for() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.held.pop(pending.session_id)  # refused by the daemon: no message, not busy
    agent.busy.discard(pending.session_id)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.error_name == "TurnUnanswered"
    assert ledger.status(_call().op_key) == CallStatus.FAILED


def test_a_call_still_busy_past_its_deadline_is_aborted_and_timed_out() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    assert ledger.status(_call().op_key) == CallStatus.TIMED_OUT
    assert agent.aborted == [pending.session_id]
    assert agent.abort_waits == [ABORT_S]


def test_a_turn_stopped_at_its_deadline_that_broke_a_rule_is_refused_not_retried() -> None:
    """A model sets its own pace: a turn that read outside its worktree, then kept busy
    past the deadline, is judged once stopped and refused under the rule (recorded
    ``aborted``, its text withheld), not settled timed out and asked again."""
    turn = ScriptedTurn(
        answer=ANSWER, session_tokens=tokens(19), earlier_tools=["read@/elsewhere/secret"]
    )
    agent = _held(turn)
    ledger = InMemoryLedger()
    _send(agent, ledger)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.error_name, failed.value.kind) == ("PathOutsideWorktree", "refused")
    row = ledger.rows[_call().op_key].record
    assert row.status == CallStatus.ABORTED
    assert row.response is not None
    assert "withheld" in row.response


def test_a_clean_turn_stopped_at_its_deadline_is_timed_out_as_before() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19), earlier_tools=["read"]))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    assert ledger.status(_call().op_key) == CallStatus.TIMED_OUT


def _abort_failing(agent: FakeAgent, times: int | None, status: int = 500) -> list[str]:
    """The daemon refuses the next ``times`` aborts (None: every one); returns the tries."""
    tried: list[str] = []
    real_abort = agent.abort

    def refusing(session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        tried.append(session_id)
        if times is None or len(tried) <= times:
            raise OpenCodeServerError(f"HTTP {status} (fake): abort", status=status)
        return real_abort(session_id, directory=directory, timeout_s=timeout_s)

    agent.abort = refusing  # type: ignore[method-assign]
    return tried


def test_an_overdue_call_whose_abort_failed_stays_sent_and_tries_again() -> None:
    """Its turn may still be running, and spending: the call is not settled (which would
    never read what it costs) until the daemon confirms the abort."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    tried = _abort_failing(agent, times=1)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1

    with pytest.raises(CallPending) as again:
        _calls(agent, ledger).prompt_structured(_call())
    assert (again.value.session_id, again.value.hold_s) == (pending.session_id, ABORT_RETRY_S)
    assert ledger.status(_call().op_key) == CallStatus.SENT

    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1 + ABORT_RETRY_S
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    assert "never confirmed" not in str(failed.value)
    assert ledger.status(_call().op_key) == CallStatus.TIMED_OUT
    assert tried == [pending.session_id] * 2


def test_a_turn_that_ends_while_its_abort_is_retried_is_collected_as_any_other() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    _abort_failing(agent, times=None)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallPending):
        _calls(agent, ledger).prompt_structured(_call())

    agent.release(pending.session_id)  # the model finished after all

    result = _calls(agent, ledger).prompt_structured(_call())
    assert (result.answer, result.usage["total_tokens"]) == (ANSWER, 70)
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED


def test_past_the_abort_window_the_call_is_settled_saying_its_turn_may_still_run() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    _abort_failing(agent, times=None)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + ABORT_WINDOW_S
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    row = ledger.rows[_call().op_key]
    assert (row.record.error or "").endswith(
        "; its abort was never confirmed: the turn may still be running"
    )
    assert (row.daemon, row.session_id) == ("http://oc-1", pending.session_id)  # for triage
    assert ledger.status(_call().op_key) == CallStatus.TIMED_OUT


def test_a_woken_overdue_call_whose_abort_failed_parks_as_woken_not_woken_again() -> None:
    """session.error came (the row is woken) but the session is still busy: the retry
    parks the step for ABORT_RETRY_S; a CallPending saying not woken would have the
    park send the step again at once, in a loop."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    ledger.wake(pending.session_id, "UnknownError: boom")
    _abort_failing(agent, times=None)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    calls = _calls(agent, ledger)
    calls.wait_poll_s = 1.0  # the brief wait for the idle after session.error moves the clock
    with pytest.raises(CallPending) as again:
        calls.prompt_structured(_call())
    assert (again.value.hold_s, again.value.woken) == (ABORT_RETRY_S, True)


def test_a_turn_seen_idle_needs_no_abort_retry_it_runs_no_more() -> None:
    """The collector saw session.idle, then the daemon answered 500 to every read: the
    turn ended, so the call is settled at its deadline without an abort retry or its
    warning; unread until then, the turn is refused unjudged (never retried)."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    ledger.wake(pending.session_id)
    _abort_failing(agent, times=None)

    def unreadable(session_id: str, *, directory: str) -> PromptReply | None:
        raise OpenCodeServerError("HTTP 500 (fake): messages", status=500)

    agent.last_message = unreadable  # type: ignore[method-assign]
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.error_name, failed.value.kind) == ("TurnNotInspectable", "refused")
    assert "never confirmed" not in (ledger.rows[_call().op_key].record.error or "")


def test_an_abort_answered_404_needs_no_retry_its_session_is_gone() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    _abort_failing(agent, times=None, status=404)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    assert "never confirmed" not in (ledger.rows[_call().op_key].record.error or "")


def test_an_aborted_turn_collected_after_a_cancel_reads_back_as_aborted() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.abort(pending.session_id, directory="/w")
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.status == CallStatus.ABORTED


def test_two_deliveries_collecting_at_once_record_one_outcome_and_agree() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    first, second = _calls(agent, ledger), _calls(agent, ledger)
    real_finish = ledger.finish
    raced: list[bool] = []

    def finish_after_the_other(op_key: str, outcome: Any, **kw: Any) -> bool:
        if not raced:  # the other delivery records first, between our read and our write
            raced.append(True)
            assert second.prompt_structured(_call()).answer == ANSWER
        return real_finish(op_key, outcome, **kw)

    ledger.finish = finish_after_the_other  # type: ignore[method-assign]
    assert first.prompt_structured(_call()).answer == ANSWER
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED


def test_a_woken_delivery_waits_briefly_for_the_idle_that_follows_a_session_error() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    ledger.wake(pending.session_id, "UnknownError: boom")  # session.error; still busy
    polls: list[int] = []
    real_busy = agent.busy_sessions

    def busy_then_idle(*, directory: str) -> dict[str, Any]:
        polls.append(1)
        if len(polls) == 2:
            agent.release(pending.session_id)
        return real_busy(directory=directory)

    agent.busy_sessions = busy_then_idle  # type: ignore[method-assign]
    assert _calls(agent, ledger).prompt_structured(_call()).answer == ANSWER


def test_a_delivery_woken_by_session_idle_reads_the_answer_without_asking_status() -> None:
    """session.idle ended the turn (one prompt per session): no GET /session/status."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    asked: list[str] = []
    real_busy = agent.busy_sessions

    def counted(*, directory: str) -> dict[str, Any]:
        asked.append(directory)
        return real_busy(directory=directory)

    agent.busy_sessions = counted  # type: ignore[method-assign]
    assert _calls(agent, ledger).prompt_structured(_call()).answer == ANSWER
    assert asked == []


def test_a_daemon_that_cannot_be_asked_defers_collection_until_the_deadline() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    from shared.opencode.errors import OpenCodeUnreachable

    def unreachable(*, directory: str) -> dict[str, Any]:
        raise OpenCodeUnreachable("connection refused")

    agent.busy_sessions = unreachable  # type: ignore[method-assign]
    with pytest.raises(CallPending):
        _calls(agent, ledger).prompt_structured(_call())
    ledger.rows[_call().op_key].age_s = TIMEOUT_S
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"


@pytest.mark.parametrize("reachable", [True, False], ids=["status-failing", "unreachable"])
def test_a_call_past_its_deadline_is_billed_its_sessions_totals_unless_unreachable(
    reachable: bool,
) -> None:
    """The status keeps failing past the deadline: the call is timed out and billed what
    its session spent (a daemon that answers nothing is not asked again)."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(5000)))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    from shared.opencode.errors import OpenCodeServerError, OpenCodeUnreachable

    def failing(*, directory: str) -> dict[str, Any]:
        if reachable:
            raise OpenCodeServerError("HTTP 500 (fake): status", status=500)
        raise OpenCodeUnreachable("connection refused")

    agent.busy_sessions = failing  # type: ignore[method-assign]
    ledger.rows[_call().op_key].age_s = TIMEOUT_S
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "timeout"
    usage = ledger.rows[_call().op_key].record.usage
    assert (usage or {}).get("total_tokens") == (5000 if reachable else None)


def test_the_collected_reply_is_the_one_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    """What last_message returns is what is recorded: a reply with an info.error is a
    failure of its kind, exactly as a blocking prompt's reply would be."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    error = {"name": "APIError", "data": {"message": "overloaded", "isRetryable": True}}
    monkeypatch.setitem(
        agent.replies,
        pending.session_id,
        PromptReply(
            info={
                "id": "msg_errored",
                "role": "assistant",
                "parentID": prompt_message_id(_call().op_key),
                "error": error,
            },
            parts=[],
        ),
    )
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "transient"


def _died_before_marking_sent(ledger: InMemoryLedger, age_s: float) -> None:
    """The claimant sent the prompt and died before recording ``sent``."""
    row = ledger.rows[_call().op_key]
    row.record = replace(row.record, status=CallStatus.CLAIMED)
    row.age_s = age_s


def test_a_live_claim_parks_the_delivery_instead_of_holding_its_thread() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    _send(agent, ledger)
    _died_before_marking_sent(ledger, age_s=3.0)
    with pytest.raises(CallPending) as parked:
        _calls(agent, ledger).prompt_structured(_call())
    assert parked.value.hold_s == pytest.approx(TIMEOUT_S + 5.0 - 3.0)
    assert ledger.status(_call().op_key) == CallStatus.CLAIMED


def test_an_overdue_claim_whose_session_answered_is_collected_not_declared_unknown() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    _died_before_marking_sent(ledger, age_s=TIMEOUT_S + 6.0)
    result = _calls(agent, ledger).prompt_structured(_call())
    assert (result.answer, result.cache) == (ANSWER, "miss"), "the paid answer is used"
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED
    assert len(agent.sent) == 1


def test_an_overdue_claim_that_never_reached_the_daemon_fails_unpaid_and_is_retried() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.held.pop(pending.session_id)  # the prompt never arrived: no message, idle
    agent.busy.discard(pending.session_id)
    _died_before_marking_sent(ledger, age_s=TIMEOUT_S + 6.0)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.error_name == "TurnUnanswered"
    assert failed.value.retryable
    assert ledger.status(_call().op_key) == CallStatus.FAILED


def test_an_overdue_claim_without_a_session_is_declared_unknown_as_before() -> None:
    ledger = InMemoryLedger()
    ledger.claimed_elsewhere(_call(), age_s=TIMEOUT_S + 6.0)
    with pytest.raises(CallFailed) as unknown:
        _calls(FakeAgent(), ledger).prompt_structured(_call())
    assert unknown.value.kind == "unknown"


def test_the_daemons_400_for_an_unanswered_turn_fails_it_quoting_the_session_error() -> None:
    from shared.opencode.errors import OpenCodePermanentError

    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.held.pop(pending.session_id)
    agent.busy.discard(pending.session_id)
    row = ledger.rows[_call().op_key]
    row.record = replace(row.record, error="UnknownError: Unexpected server error")
    row.woken = True

    def newest_is_the_prompt(session_id: str, *, directory: str) -> PromptReply | None:
        said = 'Expected OutputFormatJsonSchema, got {"type":"text"} at [0]["info"]["format"]'
        raise OpenCodePermanentError(
            f"HTTP 400 BadRequest: {said}", status=400, name="BadRequest", data={"message": said}
        )

    agent.last_message = newest_is_the_prompt  # type: ignore[method-assign]
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.error_name, failed.value.kind) == ("TurnUnanswered", "transient")
    assert "the daemon said: UnknownError: Unexpected server error" in failed.value.error


def test_a_session_its_restarted_daemon_forgot_fails_as_lost_not_at_the_deadline() -> None:
    from shared.opencode.errors import OpenCodePermanentError

    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.busy.discard(pending.session_id)

    def not_found(session_id: str, *, directory: str) -> PromptReply | None:
        raise OpenCodePermanentError("HTTP 404 NotFoundError: Session not found", status=404)

    agent.last_message = not_found  # type: ignore[method-assign]
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.error_name, failed.value.kind) == ("SessionLost", "transient")
    assert ledger.status(_call().op_key) == CallStatus.FAILED


def test_an_answer_too_large_to_read_is_refused_unjudged_never_retried() -> None:
    """A model chooses its answer's size: a turn whose answer kodo cannot read had its
    steps judged by nobody (a read outside its worktree among them), so it fails closed,
    naming the cap, and keeps nothing of the turn but what it was billed."""
    from shared.opencode.messages import AnswerTooLarge

    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)

    def too_large(session_id: str, *, directory: str) -> PromptReply | None:
        raise AnswerTooLarge("GET messages: passed 65536 bytes (KODO_MAX_ANSWER_BYTES=65536)")

    agent.last_message = too_large  # type: ignore[method-assign]
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.error_name, failed.value.kind) == ("TurnNotInspectable", "refused")
    assert not failed.value.retryable
    row = ledger.rows[_call().op_key].record
    assert (row.status, row.response) == (CallStatus.FAILED, None)
    assert "KODO_MAX_ANSWER_BYTES=65536" in (row.error or "")
    assert (row.usage or {}).get("total_tokens") == 19


def test_a_turn_whose_steps_the_daemon_cannot_show_now_is_judged_when_it_can() -> None:
    """A 5xx reading the steps of a sent call's ended turn records nothing: the call
    stays ``sent`` (the collector, or the deadline, reads it again) and is then judged
    whole."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(19), earlier_unreadable=True))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)

    with pytest.raises(CallPending):
        _calls(agent, ledger).prompt_structured(_call())
    assert ledger.status(_call().op_key) == CallStatus.SENT

    agent.sessions[pending.session_id].earlier_unreadable = False
    result = _calls(agent, ledger).prompt_structured(_call())
    assert result.answer == ANSWER
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED


class _CountingLedger(InMemoryLedger):
    """Counts the claims (each one a transaction on Postgres)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    def claim_or_read(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return super().claim_or_read(*args, **kwargs)


def test_a_woken_delivery_collects_from_the_row_read_with_its_lease_without_a_claim() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _CountingLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    known = ledger.read(pending.op_key)  # what the step's snapshot read when it entered
    claims = ledger.claims
    result = _calls(agent, ledger).prompt_structured(
        _call(), seen=StepLedger(parked=known, last_attempt=1)
    )
    assert result.answer == ANSWER
    assert ledger.claims == claims  # no claim: the row was known
    assert ledger.status(pending.op_key) == CallStatus.SUCCEEDED
    assert len(agent.sent) == 1


def test_a_known_row_of_another_call_is_ignored_and_the_call_claimed() -> None:
    """The step parked on attempt 1; attempt 2 (another op_key) is claimed as ever."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    agent.will(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _CountingLedger()
    pending = _send(agent, ledger)
    known = ledger.read(pending.op_key)
    claims = ledger.claims
    with pytest.raises(CallPending) as second:
        _calls(agent, ledger).prompt_structured(_call(attempt=2), seen=StepLedger(parked=known))
    assert ledger.claims == claims + 1
    assert second.value.op_key == _call(attempt=2).op_key
    assert len(agent.sent) == 2


def test_a_known_row_collected_meanwhile_by_another_delivery_is_read_back_not_recorded_twice() -> (
    None
):
    """The snapshot said ``sent``; another delivery recorded the answer since: this one's
    record (from ``sent``) is refused and the recorded answer returned."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _CountingLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    stale = ledger.read(pending.op_key)
    first = _calls(agent, ledger).prompt_structured(_call())
    again = _calls(agent, ledger).prompt_structured(_call(), seen=StepLedger(parked=stale))
    assert again.answer == first.answer == ANSWER
    assert ledger.status(pending.op_key) == CallStatus.SUCCEEDED


class _StartedLedger(_CountingLedger):
    """Counts mark_started too (each one a transaction on Postgres)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        lease: StepLease | None = None,
    ) -> bool:
        self.started += 1
        return super().mark_started(op_key, session_id, daemon, lease=lease)


def test_a_new_attempt_has_its_session_made_first_and_recorded_with_its_claim() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _StartedLedger()
    with pytest.raises(CallPending) as pending:
        _calls(agent, ledger).prompt_structured(_call(), seen=StepLedger(last_attempt=0))
    row = ledger.rows[_call().op_key]
    assert (row.session_id, row.daemon) == (pending.value.session_id, "http://oc-1")
    assert (ledger.claims, ledger.started) == (1, 0), "one claim, no mark_started"
    assert [s.session_id for s in agent.sent] == [pending.value.session_id]


def test_an_attempt_the_ledger_may_hold_is_claimed_before_any_session_is_made() -> None:
    """A replay of a recorded attempt makes no session it would only delete."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _StartedLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    _calls(agent, ledger).prompt_structured(_call())  # collected by another delivery
    sessions = len(agent.sessions)
    replay = _calls(agent, ledger).prompt_structured(_call(), seen=StepLedger(last_attempt=1))
    assert (replay.cache, replay.answer) == ("l2", ANSWER)
    assert len(agent.sessions) == sessions
    assert agent.deleted == [pending.session_id]


def test_a_call_with_a_prepare_makes_its_session_after_the_claim_as_before() -> None:
    """ApplyPatchST's prepare aborts the step's sessions in doubt: its own claimed row
    must not carry one yet."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _StartedLedger()
    order: list[str] = []

    def prepare() -> None:
        order.append(f"prepare with {len(agent.sessions)} sessions")

    with pytest.raises(CallPending):
        _calls(agent, ledger).prompt_structured(
            _call(), prepare=prepare, seen=StepLedger(last_attempt=0)
        )
    assert order == ["prepare with 0 sessions"]
    assert (ledger.claims, ledger.started) == (1, 1)


def test_a_session_made_for_a_claim_another_delivery_won_is_deleted_unprompted() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _StartedLedger()
    ledger.claimed_elsewhere(_call(), age_s=1.0)  # a twin delivery won it meanwhile
    with pytest.raises(CallPending):  # waits for the twin's call (parks)
        _calls(agent, ledger).prompt_structured(_call(), seen=StepLedger(last_attempt=0))
    assert agent.sent == []
    assert agent.deleted == ["ses_fake1"]
    assert ledger.rows[_call().op_key].session_id is None


def test_a_session_made_for_a_refused_claim_is_deleted_and_nothing_sent() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = _StartedLedger()
    lease = StepLease("run-1", StepId.DECIDE, fence=1, lease_s=60)
    ledger.abandoned[lease] = "run is cancelled"
    with pytest.raises(StepAbandoned):
        _calls(agent, ledger).prompt_structured(
            _call(), lease=lease, seen=StepLedger(last_attempt=0)
        )
    assert agent.sent == []
    assert agent.deleted == ["ses_fake1"]
    assert _call().op_key not in ledger.rows


# -- an answer recorded with the step's outcome (UnrecordedAnswers) -------------------


def _collected_unrecorded(
    agent: FakeAgent, ledger: InMemoryLedger
) -> tuple[ExactlyOnceCalls, UnrecordedAnswers, str]:
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    calls, unrecorded = _calls(agent, ledger), UnrecordedAnswers()
    result = calls.prompt_structured(_call(), unrecorded=unrecorded)
    assert (result.answer, result.cache) == (ANSWER, "miss")
    return calls, unrecorded, pending.session_id


def test_a_collected_answer_waits_for_the_outcome_with_its_row_sent_and_its_session_kept() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    _, unrecorded, _ = _collected_unrecorded(agent, ledger)
    [waiting] = unrecorded.pending
    assert waiting.op_key == _call().op_key
    assert waiting.outcome.status == CallStatus.SUCCEEDED
    assert waiting.outcome.response is not None
    assert waiting.outcome.response["structured"] == ANSWER
    assert waiting.outcome.usage is not None
    assert waiting.outcome.usage["total_tokens"] == 70
    # Until the outcome commits, a worker that dies leaves it collectable, unpaid:
    assert ledger.status(_call().op_key) == CallStatus.SENT
    assert agent.deleted == []
    again = _calls(agent, ledger).prompt_structured(_call())
    assert again.answer == ANSWER
    assert len(agent.sent) == 1


def test_settling_after_the_commit_deletes_the_session_and_caches_the_answer() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    calls, unrecorded, session_id = _collected_unrecorded(agent, ledger)
    waiting = unrecorded.pending[0]
    assert ledger.finish(waiting.op_key, waiting.outcome, from_status=CallStatus.SENT)
    unrecorded.settle()  # what the runner does once the outcome's transaction committed
    assert unrecorded.pending == []
    assert agent.deleted == [session_id]
    assert calls.prompt_structured(_call()).cache == "l1"


def test_the_next_attempts_claim_records_a_waiting_answer_first() -> None:
    turn = ScriptedTurn(answer=ANSWER, session_tokens=tokens(70))
    agent = _held(turn)
    agent.script.append(turn)  # the second attempt's turn
    ledger = InMemoryLedger()
    calls, unrecorded, session_id = _collected_unrecorded(agent, ledger)
    with pytest.raises(CallPending):
        calls.prompt_structured(_call(attempt=2), unrecorded=unrecorded)
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED
    assert unrecorded.pending == []
    assert session_id in agent.deleted


def test_a_waiting_answer_another_delivery_recorded_first_is_that_same_answer() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    calls, unrecorded, session_id = _collected_unrecorded(agent, ledger)
    other = _calls(agent, ledger).prompt_structured(_call())  # a delivery that took over
    assert other.answer == ANSWER
    assert agent.deleted == [session_id]  # it settled: recorded, then deleted
    calls.flush(unrecorded)  # one prompt per session: what it recorded is this answer
    assert unrecorded.pending == []
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED
    assert len(agent.sent) == 1


def test_a_waiting_answer_whose_call_a_cancel_aborted_first_supersedes_the_delivery() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(70)))
    ledger = InMemoryLedger()
    calls, unrecorded, _ = _collected_unrecorded(agent, ledger)
    aborted = CallOutcome(CallStatus.ABORTED, NOW, None, error_name="Aborted", error="cancel")
    assert ledger.finish(_call().op_key, aborted, from_status=CallStatus.SENT)
    with pytest.raises(CallSuperseded, match="collected by another delivery"):
        calls.flush(unrecorded)
    assert ledger.status(_call().op_key) == CallStatus.ABORTED


def test_a_failed_answer_is_recorded_at_once_whatever_the_caller_offers() -> None:
    agent = _held(ScriptedTurn(answer={"next_action": "nonsense"}, session_tokens=tokens(19)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    unrecorded = UnrecordedAnswers()
    with pytest.raises(CallFailed):
        _calls(agent, ledger).prompt_structured(_call(), unrecorded=unrecorded)
    assert unrecorded.pending == []
    assert ledger.status(_call().op_key) == CallStatus.FAILED


ABORTED = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}


def test_a_collected_aborted_turn_that_broke_a_rule_is_recorded_aborted() -> None:
    agent = _held(ScriptedTurn(earlier_tools=["bash"], info_error=ABORTED))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "contract", "as a failed turn that broke the rule is"
    row = ledger.rows[_call().op_key].record
    assert (row.status, row.error_name) == ("aborted", "ToolNotAllowed")


def test_an_aborted_turn_that_cannot_be_read_is_refused_and_keeps_its_abort() -> None:
    """An aborted turn's steps are judged like any other's: one the daemon cannot list
    is refused unjudged, still recorded ``aborted`` (floored), not as the read's
    failure."""
    agent = _held(ScriptedTurn(info_error=ABORTED))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)

    def unreadable(session_id: str, *, directory: str) -> list[dict[str, object]]:
        raise OpenCodeError("GET /session/{id}/children: HTTP 422 (fake)", status=422)

    agent.session_children = unreadable  # type: ignore[method-assign]
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    row = ledger.rows[_call().op_key].record
    assert (row.status, row.error_name) == ("aborted", "TurnNotInspectable")
    assert failed.value.kind == "refused"


def _marked_over_bound(ledger: InMemoryLedger) -> str:
    """What the collector records on a running turn past its bound, before its abort."""
    mark = over_bound_error(Spent(250_000), 200_000)
    row = ledger.rows[_call().op_key]
    row.record = replace(row.record, error=mark)
    return mark


def test_a_turn_aborted_for_passing_its_token_bound_is_refused_under_that_rule() -> None:
    """Recorded ``aborted`` (its settle spends at least the reservation), billed the
    session's whole spend, and refused: no other attempt, which would spend as much."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(250_000)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    mark = _marked_over_bound(ledger)
    agent.abort(pending.session_id, directory="/w")  # the collector's abort
    ledger.wake(pending.session_id)  # its session.error keeps the mark (test_wake.py)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "refused"
    row = ledger.rows[_call().op_key].record
    assert (row.status, row.error_name) == (CallStatus.ABORTED, "CallTokenBound")
    assert row.error == mark, "the diagnostic names the rule, the tokens and the bound"
    assert row.usage is not None
    assert row.usage["total_tokens"] == 250_000


def test_a_marked_turn_that_ended_on_its_own_before_the_abort_is_judged_as_any_other() -> None:
    """The bound is enforced by stopping a turn: one that answered first is used (and
    billed what it used), not thrown away after it was paid for."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(250_000)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    _marked_over_bound(ledger)
    agent.release(pending.session_id)  # answered before the abort arrived
    agent.abort(pending.session_id, directory="/w")
    ledger.wake(pending.session_id)
    result = _calls(agent, ledger).prompt_structured(_call())
    assert (result.answer, result.usage["total_tokens"]) == (ANSWER, 250_000)
    assert ledger.status(_call().op_key) == CallStatus.SUCCEEDED


def test_a_marked_turn_still_running_when_its_step_is_woken_is_aborted_by_the_step() -> None:
    """The collector wakes the step when the daemon did not confirm its abort: the step
    asks again, and judges the turn once it stopped."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(250_000)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    mark = _marked_over_bound(ledger)
    ledger.wake(pending.session_id, error=mark)  # still busy: nothing stopped it yet
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert agent.aborted == [pending.session_id]
    assert failed.value.kind == "refused"
    row = ledger.rows[_call().op_key].record
    assert (row.status, row.error_name) == (CallStatus.ABORTED, "CallTokenBound")
