"""The exactly-once call protocol against the fake daemon and the in-memory ledger."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.call_record import CallRecord
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.domain.vocab import NEVER_SENT, NEVER_SENT_ERROR, CallStatus
from shared.opencode.cache import LruCache
from shared.opencode.calls import (
    UNKNOWN_ERROR,
    CallFailed,
    CallOutcome,
    CallPending,
    CallSuperseded,
    OutcomeUnknown,
    StructuredCall,
)
from shared.opencode.errors import OpenCodeError, OpenCodeTransientError, OpenCodeUnreachable
from shared.opencode.exactly_once import ABORT_S, BILLED_READ_S, INSPECT_TRIES, ExactlyOnceCalls
from shared.opencode.messages import AnswerTooLarge, ModelRef, PromptReply, prompt_message_id
from tests.fakes.agent import (
    FakeAgent,
    ScriptedTurn,
    http_500,
    no_answer_in_time,
    tokens,
    unknown_model,
)
from tests.fakes.ledger import InMemoryLedger

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
MODEL = ModelRef("kodo", "kodo-scripted")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _calls(agent: FakeAgent, ledger: InMemoryLedger, timeout_s: float = 5.0) -> ExactlyOnceCalls:
    clock = FixedClock(NOW)
    return ExactlyOnceCalls(agent, ledger, clock, model=MODEL, timeout_s=timeout_s, l1=LruCache())


def _call(attempt: int = 1, prompt: str = "choose a command") -> StructuredCall:
    return StructuredCall("run-1", "DecideST", attempt, "plan", prompt, BUILD_OUTPUT_SCHEMA, "/w")


def test_a_call_is_claimed_sent_once_and_recorded_with_the_turns_usage() -> None:
    agent = FakeAgent(ScriptedTurn(answer=ANSWER, session_tokens=tokens(120, input=100)))
    ledger = InMemoryLedger()
    result = _calls(agent, ledger).prompt_structured(_call())
    assert (result.answer, result.cache) == (ANSWER, "miss")
    assert result.usage["total_tokens"] == 120  # the whole turn's, not the last message's
    assert agent.totals_read_timeouts == [], "added up from the messages the rules read"
    assert len(agent.sent) == 1
    assert agent.sent[0].model == MODEL
    row = ledger.rows[result.op_key]
    assert row.record.status == "succeeded"
    assert row.session_id == "ses_fake1"
    assert row.record.response is not None
    assert row.record.response["structured"] == ANSWER
    assert row.request["agent"] == "plan"
    assert row.request["tools"]["edit"] is False


def test_a_repeated_call_is_answered_from_memory_then_from_the_ledger_never_sent_again() -> None:
    agent = FakeAgent(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50)))
    ledger = InMemoryLedger()
    first = _calls(agent, ledger)
    assert first.prompt_structured(_call()).cache == "miss"
    assert first.prompt_structured(_call()).cache == "l1"
    other_worker = _calls(agent, ledger)  # its own L1: only the ledger knows the answer
    replayed = other_worker.prompt_structured(_call())
    assert (replayed.cache, replayed.answer, replayed.usage["total_tokens"]) == ("l2", ANSWER, 50)
    assert len(agent.sent) == 1


def test_an_http_500_is_recorded_as_a_transient_failure_and_the_next_attempt_may_call() -> None:
    agent = FakeAgent(ScriptedTurn(error=http_500()), ScriptedTurn(answer=ANSWER))
    ledger = InMemoryLedger()
    calls = _calls(agent, ledger)
    with pytest.raises(CallFailed) as failed:
        calls.prompt_structured(_call(1))
    assert (failed.value.kind, failed.value.retryable) == ("transient", True)
    assert ledger.status(failed.value.op_key) == "failed"
    assert calls.prompt_structured(_call(2)).answer == ANSWER
    assert len(agent.sent) == 2


@pytest.mark.parametrize(
    ("error", "recorded"),
    [
        (OpenCodeTransientError("POST /session/{id}/message: ReadError: reset"), "TurnLost"),
        (http_500(), "OpenCodeServerError"),  # the daemon's own account of its failure
        (OpenCodeTransientError("HTTP 503 from the proxy", status=503), "OpenCodeTransientError"),
        (OpenCodeUnreachable("ConnectError: refused"), "OpenCodeUnreachable"),
        (unknown_model(), "OpenCodeConfigError"),
    ],
)
def test_a_send_that_broke_after_the_prompt_left_is_named_a_lost_turn(
    error: OpenCodeError, recorded: str
) -> None:
    """The settle spends at least the reservation of a TurnLost call (migration 0027):
    only a connection broken after the prompt left is named so; an answered failure (a
    500, a proxy's 503), a refused or an unreachable prompt keeps its own name."""
    agent = FakeAgent(ScriptedTurn(error=error))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    row = ledger.rows[failed.value.op_key].record
    assert (row.status, row.error_name) == ("failed", recorded)
    assert str(error) in (row.error or ""), "the original failure is quoted"
    assert failed.value.kind == ("config" if recorded == "OpenCodeConfigError" else "transient")


def test_a_recorded_failure_replays_with_its_kind_and_is_not_sent_again() -> None:
    agent = FakeAgent(ScriptedTurn(error=http_500()))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed):
        _calls(agent, ledger).prompt_structured(_call())
    with pytest.raises(CallFailed) as replayed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (replayed.value.kind, replayed.value.replayed) == ("transient", True)
    assert len(agent.sent) == 1


def test_a_configuration_error_is_terminal() -> None:
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(FakeAgent(ScriptedTurn(error=unknown_model())), ledger).prompt_structured(_call())
    assert (failed.value.kind, failed.value.retryable) == ("config", False)
    assert ledger.rows[failed.value.op_key].record.error_name == "OpenCodeConfigError"


def test_a_timeout_is_recorded_timed_out_and_the_session_aborted() -> None:
    agent = FakeAgent(ScriptedTurn(error=no_answer_in_time()))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert (failed.value.kind, failed.value.status) == ("timeout", "timed_out")
    assert ledger.status(failed.value.op_key) == "timed_out"
    assert agent.aborted == ["ses_fake1"]
    assert agent.abort_waits == [ABORT_S], "a hung daemon holds the worker ABORT_S at most"


def test_a_started_claim_older_than_any_live_call_is_declared_unknown_and_never_sent() -> None:
    agent = FakeAgent()
    ledger = InMemoryLedger()
    call = _call()
    ledger.claimed_elsewhere(call, age_s=3600, session_id="ses_theirs")  # maybe sent
    with pytest.raises(OutcomeUnknown) as unknown:
        _calls(agent, ledger, timeout_s=1).prompt_structured(call)
    assert (unknown.value.kind, unknown.value.error) == ("unknown", UNKNOWN_ERROR)
    assert ledger.status(call.op_key) == "unknown"
    assert agent.sent == []


def test_an_overdue_claim_without_a_session_is_recorded_never_sent_at_no_cost() -> None:
    """Every prompt leaves after its session is recorded on its claimed row: an overdue
    claim without one was never sent. Declared unknown, it held its reservation for
    good; failed, it settles at nothing (and its claimant can no longer send it)."""
    agent = FakeAgent()
    ledger = InMemoryLedger()
    call = _call()
    ledger.claimed_elsewhere(call, age_s=3600)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger, timeout_s=1).prompt_structured(call)
    assert (failed.value.kind, failed.value.error_name) == ("unknown", NEVER_SENT)
    assert failed.value.error == NEVER_SENT_ERROR
    assert ledger.status(call.op_key) == "failed"
    assert ledger.rows[call.op_key].record.usage is None
    assert agent.sent == []
    # read back by a later delivery, the same failure (its next prompt quotes it alike)
    with pytest.raises(CallFailed) as again:
        _calls(agent, ledger, timeout_s=1).prompt_structured(call)
    assert (again.value.kind, again.value.error, again.value.replayed) == (
        "unknown",
        NEVER_SENT_ERROR,
        True,
    )


def test_a_claimant_given_up_as_never_sent_does_not_send() -> None:
    agent = FakeAgent(ScriptedTurn(answer=ANSWER))
    ledger = _GivenUpWhilePrepared()
    with pytest.raises(CallSuperseded, match="never sent"):
        _calls(agent, ledger).prompt_structured(_call(), prepare=ledger.give_up)
    assert agent.sent == []
    assert agent.deleted == ["ses_fake1"]
    assert ledger.status(_call().op_key) == "failed"


class _GivenUpWhilePrepared(InMemoryLedger):
    """A later delivery gives the claim up as never sent while its claimant prepares."""

    def give_up(self) -> None:
        (key,) = self.rows
        outcome = CallOutcome(CallStatus.FAILED, NOW, None, error_name=NEVER_SENT)
        assert self.finish_unsent(key, outcome)


@pytest.mark.parametrize(
    ("turn", "rule"),
    [
        (ScriptedTurn(answer=ANSWER, tools=["bash"]), "ToolNotAllowed"),
        (ScriptedTurn(answer=ANSWER, earlier_tools=["write"]), "ToolNotAllowed"),
        (ScriptedTurn(answer=ANSWER, children=[{"id": "ses_child"}]), "ChildSessionForbidden"),
        (ScriptedTurn(answer={"argv": "rm -rf /"}), "ContractViolation"),
    ],
    ids=["tool-in-answer", "tool-earlier-in-turn", "child-session", "schema"],
)
def test_a_turn_that_breaks_a_rule_is_recorded_failed_and_billed_its_whole_turn(
    turn: ScriptedTurn, rule: str
) -> None:
    """A hostile model that runs tools for many steps and then breaks a rule is billed
    every step (its messages added up), not its last message: the budget spends it all."""
    turn.session_tokens = tokens(900, input=800, output=100)
    turn.message_tokens = tokens(10)
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(FakeAgent(turn), ledger).prompt_structured(_call())
    assert (failed.value.kind, failed.value.error_name) == ("contract", rule)
    usage = ledger.rows[failed.value.op_key].record.usage
    assert usage is not None
    assert (usage["total_tokens"], usage["input_tokens"]) == (900, 800)


def _billed_when_failing(turn: ScriptedTurn, agent: FakeAgent | None = None) -> int | None:
    """The total tokens recorded for ``turn``'s call (played by ``agent``, or a fresh
    fake daemon), which must fail."""
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent or FakeAgent(turn), ledger).prompt_structured(_call())
    usage = ledger.rows[failed.value.op_key].record.usage
    return None if usage is None else int(usage["total_tokens"])


def test_a_failed_turn_whose_totals_cannot_be_read_is_billed_its_answers_own_usage() -> None:
    turn = ScriptedTurn(answer={"argv": "x"}, session_tokens=None, message_tokens=tokens(12))
    assert _billed_when_failing(turn) == 12


def test_a_rule_breaking_turn_is_billed_its_messages_added_up_without_reading_its_totals() -> None:
    turn = ScriptedTurn(
        answer=ANSWER, tools=["bash"], session_tokens=tokens(900), message_tokens=tokens(10)
    )
    agent = FakeAgent(turn)
    assert _billed_when_failing(turn, agent) == 900
    assert agent.totals_read_timeouts == [], "the turn's messages say it: no extra request"


def test_a_turn_whose_messages_cannot_be_read_is_billed_its_totals_read_again_if_need_be() -> None:
    """The inspections' reads of the totals failed too (a blocking call reads the turn
    INSPECT_TRIES times); the failure's own read is bounded (a hung daemon already cost
    the failure its wait), not left to the client's prompt-long timeout."""
    turn = ScriptedTurn(
        answer=ANSWER,
        session_tokens=tokens(900),
        message_tokens=tokens(10),
        earlier_unreadable=True,
        totals_fail_first=INSPECT_TRIES,
    )
    agent = FakeAgent(turn)
    assert _billed_when_failing(turn, agent) == 900
    assert agent.totals_read_timeouts == [None] * INSPECT_TRIES + [BILLED_READ_S]


@pytest.mark.parametrize(
    ("totals", "billed"), [(tokens(300), 300), (None, None)], ids=["readable", "unreadable"]
)
def test_a_timed_out_turn_is_billed_what_its_session_spent_before_the_abort(
    totals: dict[str, Any] | None, billed: int | None
) -> None:
    turn = ScriptedTurn(error=no_answer_in_time(), session_tokens=totals)
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(FakeAgent(turn), ledger).prompt_structured(_call())
    assert failed.value.status == "timed_out"
    usage = ledger.rows[failed.value.op_key].record.usage
    assert (usage or {}).get("total_tokens") == billed


def test_unreadable_session_totals_fall_back_to_the_answers_own_usage() -> None:
    turn = ScriptedTurn(answer=ANSWER, session_tokens=None, message_tokens=tokens(7))
    result = _calls(FakeAgent(turn), InMemoryLedger()).prompt_structured(_call())
    assert result.usage["total_tokens"] == 7


def test_an_abandoned_delivery_claims_nothing_and_sends_nothing() -> None:
    agent = FakeAgent(ScriptedTurn(answer=ANSWER))
    lease = StepLease("run-1", StepId.DECIDE, fence=1, lease_s=60)
    ledger = InMemoryLedger(abandoned={lease: "run is cancelled"})
    with pytest.raises(StepAbandoned, match="cancelled"):
        _calls(agent, ledger).prompt_structured(_call(), lease=lease)
    assert ledger.rows == {}
    assert agent.sent == []


class _CancelledWhilePrepared(InMemoryLedger):
    """The run is cancelled while the won call is prepared (between claim and send)."""

    def __init__(self, lease: StepLease) -> None:
        super().__init__()
        self.lease = lease

    def cancel(self) -> None:
        self.abandoned[self.lease] = "run is cancelled"


def test_a_delivery_abandoned_while_its_call_is_prepared_sends_nothing() -> None:
    """The claim held the lease; the prompt leaves only if it still holds once the call
    is prepared: else its session is deleted and the claim recorded failed, unpaid."""
    agent = FakeAgent(ScriptedTurn(answer=ANSWER))
    lease = StepLease("run-1", StepId.DECIDE, fence=1, lease_s=60)
    ledger = _CancelledWhilePrepared(lease)
    with pytest.raises(StepAbandoned, match="cancelled"):
        _calls(agent, ledger).prompt_structured(_call(), lease=lease, prepare=ledger.cancel)
    assert agent.sent == []
    assert agent.deleted == ["ses_fake1"]
    (row,) = ledger.rows.values()
    assert (row.record.status, row.record.error_name) == ("failed", "StepAbandoned")
    assert row.record.usage is None


class _AnsweredMeanwhile(InMemoryLedger):
    """A ledger whose live claim its (other) claimant finishes after a few looks."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks

    def read(self, op_key: str) -> tuple[CallRecord, float] | None:
        self.looks -= 1
        if self.looks == 0:
            answered = CallOutcome(CallStatus.SUCCEEDED, NOW, 1, response={"structured": ANSWER})
            self.finish(op_key, answered)
        return super().read(op_key)


def test_a_live_claim_is_waited_out_and_its_recorded_answer_returned() -> None:
    agent = FakeAgent()
    ledger = _AnsweredMeanwhile(looks=3)
    call = _call()
    ledger.claimed_elsewhere(call, age_s=0)  # young: another worker is calling
    calls = _calls(agent, ledger)
    result = calls.prompt_structured(call)
    assert (result.cache, result.answer) == ("l2", ANSWER)
    assert calls.clock.monotonic() == pytest.approx(2 * calls.wait_poll_s)  # two polls
    assert agent.sent == []


def test_a_claim_that_outlives_the_callers_patience_is_declared_unknown() -> None:
    ledger = InMemoryLedger()
    call = _call()
    ledger.claimed_elsewhere(call, age_s=0, session_id="ses_theirs")  # never finishes
    calls = _calls(FakeAgent(), ledger, timeout_s=1)
    with pytest.raises(OutcomeUnknown):
        calls.prompt_structured(call)
    assert calls.clock.monotonic() > calls.timeout_s + calls.claim_grace_s
    assert ledger.status(call.op_key) == "unknown"


class _DeclaredUnknownBeforeTheSend(InMemoryLedger):
    """Another delivery declares the call unknown after its session was recorded, before
    its claimant's prompt leaves (the claimant stalled in between)."""

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        lease: StepLease | None = None,
    ) -> bool:
        started = super().mark_started(op_key, session_id, daemon, lease=lease)
        self.finish(op_key, CallOutcome(CallStatus.UNKNOWN, NOW, duration_ms=None))
        return started


class _DeclaringAgent(FakeAgent):
    """A daemon whose turn is under way when another delivery declares the call unknown."""

    def __init__(self, ledger: InMemoryLedger, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.ledger = ledger

    def prompt(self, session_id: str, **kwargs: Any) -> PromptReply:
        key = next(iter(self.ledger.rows))
        self.ledger.finish(key, CallOutcome(CallStatus.UNKNOWN, NOW, duration_ms=None))
        return super().prompt(session_id, **kwargs)


def test_an_answer_that_comes_after_the_call_was_declared_unknown_is_kept_but_not_used() -> None:
    ledger = InMemoryLedger()
    turn = ScriptedTurn(answer=ANSWER, session_tokens=tokens(40))
    with pytest.raises(CallSuperseded, match="succeeded_late"):
        _calls(_DeclaringAgent(ledger, turn), ledger).prompt_structured(_call())
    row = ledger.rows[_call().op_key].record
    assert row.status == CallStatus.SUCCEEDED_LATE
    assert row.usage is not None
    assert row.usage["total_tokens"] == 40  # what was paid is on the row
    with pytest.raises(OutcomeUnknown):  # a later reader acts on the declaration
        _calls(FakeAgent(), ledger).prompt_structured(_call())


def test_a_blocking_prompt_is_not_sent_once_its_call_was_recorded_by_another() -> None:
    """Read just before it leaves: a call declared unknown (or taken by a cancel's sweep)
    while its claimant stalled after recording the session is never sent, so never paid
    (red-team helper-106: a frozen worker's prompt ran to its end on a cancelled run)."""
    ledger = _DeclaredUnknownBeforeTheSend()
    agent = FakeAgent(ScriptedTurn(answer=ANSWER, session_tokens=tokens(40)))
    with pytest.raises(CallSuperseded, match="recorded unknown by another before its prompt"):
        _calls(agent, ledger).prompt_structured(_call())
    assert agent.sent == []
    assert agent.deleted == ["ses_fake1"]
    assert ledger.rows[_call().op_key].record.status == CallStatus.UNKNOWN


def test_a_recorded_calls_session_is_deleted_from_the_daemon_unless_kept() -> None:
    """The daemon's memory grows with every session; the ledger keeps what triage needs."""
    agent = FakeAgent(ScriptedTurn(answer=ANSWER), ScriptedTurn(answer=ANSWER))
    ledger = InMemoryLedger()
    _calls(agent, ledger).prompt_structured(_call())
    assert agent.deleted == ["ses_fake1"]
    kept = ExactlyOnceCalls(
        agent, ledger, FixedClock(NOW), model=MODEL, timeout_s=5.0, keep_sessions=True
    )
    kept.prompt_structured(_call(attempt=2))
    assert agent.deleted == ["ses_fake1"], "OC_KEEP_SESSIONS keeps them"


def test_a_failed_calls_session_is_deleted_but_a_timed_out_one_is_kept_for_the_abort() -> None:
    agent = FakeAgent(ScriptedTurn(answer={"wrong": True}), ScriptedTurn(error=no_answer_in_time()))
    ledger = InMemoryLedger()
    calls = _calls(agent, ledger)
    with pytest.raises(CallFailed):
        calls.prompt_structured(_call())
    with pytest.raises(CallFailed):
        calls.prompt_structured(_call(attempt=2))
    assert agent.deleted == ["ses_fake1"], (
        "the contract failure's turn is over; the timeout's may not be"
    )
    assert agent.aborted == ["ses_fake2"]


def test_the_ledger_keeps_every_tool_use_of_the_turn_with_the_paths_it_named() -> None:
    agent = FakeAgent(ScriptedTurn(answer=ANSWER, earlier_tools=["read"], tools=["grep"]))
    ledger = InMemoryLedger()
    result = _calls(agent, ledger).prompt_structured(_call())
    response = ledger.rows[result.op_key].record.response
    assert response is not None
    assert [(t["tool"], t["status"]) for t in response["tools"]] == [
        ("read", "completed"),
        ("grep", "completed"),
    ]


@pytest.mark.parametrize("async_calls", [False, True], ids=["blocking", "prompt_async"])
def test_an_answer_to_a_prompt_kodo_did_not_send_is_refused_and_recorded_failed(
    async_calls: bool,
) -> None:
    """kodo names its prompt (``messageID``): an answer whose ``parentID`` is another
    message answers a turn the daemon went on with by itself, and is never used."""
    agent = FakeAgent(ScriptedTurn(answer=ANSWER, parent="msg_23925bfb3000Sq2uPlJnobRy5Y"))
    ledger = InMemoryLedger()
    calls = ExactlyOnceCalls(
        agent,
        ledger,
        FixedClock(NOW),
        model=MODEL,
        timeout_s=5.0,
        l1=LruCache(),
        async_calls=async_calls,
    )
    call = _call()
    if async_calls:
        with pytest.raises(CallPending):
            calls.prompt_structured(call)
        ledger.mark_sent(call.op_key)
    with pytest.raises(CallFailed) as failed:
        calls.prompt_structured(call)
    row = ledger.rows[call.op_key].record
    assert (row.status, row.error_name) == ("failed", "TurnNotInspectable")
    assert "not kodo's prompt" in (row.error or "")
    assert agent.sent[0].message_id == prompt_message_id(call.op_key)
    assert failed.value.kind == "refused", "a turn kodo cannot tie to its prompt is not judged"


def test_kodos_message_id_is_the_daemons_shape_with_a_zero_time_and_the_op_keys_digest() -> None:
    first, again, other = (prompt_message_id(k) for k in ("op-a", "op-a", "op-b"))
    assert first == again, "every delivery of the call names the same message"
    assert first != other
    assert re.fullmatch(r"msg_0{12}[0-9A-Za-z]{14}", first)
    assert first < "msg_000000000001" < "msg_23925bfb3000Sq2uPlJnobRy5Y", "sorts first"


NO_STRUCTURE = {
    "name": "StructuredOutputError",
    "data": {"message": "Model did not produce structured output", "retries": 1},
}


def test_a_turn_that_broke_a_rule_then_ended_on_an_error_is_refused_for_the_rule() -> None:
    """A hostile turn runs bash, then does not answer in the schema: it is judged all
    the same, recorded for the rule it broke with its tool trail, not as the error it
    chose to end on (which would be retried as a mere contract failure)."""
    agent = FakeAgent(ScriptedTurn(earlier_tools=["bash"], info_error=NO_STRUCTURE))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    row = ledger.rows[failed.value.op_key].record
    assert (row.status, row.error_name) == ("failed", "ToolNotAllowed")
    assert row.response is not None
    assert [t["tool"] for t in row.response["tools"]] == ["bash"]


def test_an_errored_turn_that_broke_no_rule_keeps_its_error_and_its_trail() -> None:
    agent = FakeAgent(ScriptedTurn(earlier_tools=["read"], info_error=NO_STRUCTURE))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    row = ledger.rows[failed.value.op_key].record
    assert (row.status, row.error_name) == ("failed", "StructuredOutputMissing")
    assert row.response is not None
    assert [t["tool"] for t in row.response["tools"]] == ["read"]


ABORTED = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}


def test_an_aborted_turn_that_broke_a_rule_is_refused_and_recorded_aborted() -> None:
    """Refused for the rule, but ``aborted``: the step the abort cut is in no
    totals, so its settle spends at least the call's reservation."""
    agent = FakeAgent(ScriptedTurn(earlier_tools=["bash"], info_error=ABORTED))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "contract", "as a failed turn that broke the rule is"
    row = ledger.rows[failed.value.op_key].record
    assert (row.status, row.error_name) == ("aborted", "ToolNotAllowed")


def test_a_retryable_provider_error_the_daemon_answered_keeps_its_name() -> None:
    """An APIError without a status code is a failure the daemon answered, with its
    usage: never taken for a turn whose connection was lost (TurnLost, floored)."""
    retryable = {"name": "APIError", "data": {"message": "socket hang up", "isRetryable": True}}
    agent = FakeAgent(ScriptedTurn(info_error=retryable))
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.kind == "transient"
    row = ledger.rows[failed.value.op_key].record
    assert (row.status, row.error_name) == ("failed", "OpenCodeTransientError")


def _failed_row(agent: FakeAgent) -> tuple[CallFailed, CallRecord]:
    """The failure ``agent``'s one scripted turn ends in, and its ledger row."""
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    return failed.value, ledger.rows[failed.value.op_key].record


EXFILTRATED = {"next_action": "verify", "argv": ["true"], "reason": "OTHER-RUNS-SECRET"}


@pytest.mark.parametrize(
    ("turn", "trail"),
    [
        (ScriptedTurn(answer=EXFILTRATED, tools=["bash"]), ["bash"]),
        (ScriptedTurn(answer=EXFILTRATED, earlier_tools=["write"]), ["write"]),
        (ScriptedTurn(answer=EXFILTRATED, children=[{"id": "ses_child"}]), []),
    ],
    ids=["tool-in-answer", "tool-earlier-in-turn", "child-session"],
)
def test_a_turn_that_broke_a_turn_rule_keeps_no_text_of_its_answer(
    turn: ScriptedTurn, trail: list[str]
) -> None:
    """What the model said after breaking a rule may carry what it read where it must
    not (another run's files): the ledger keeps the answer's ids, model, cost and usage
    and the tool trail, never its text."""
    _, row = _failed_row(FakeAgent(turn))
    assert row.response is not None
    assert "OTHER-RUNS-SECRET" not in repr(row.response)
    assert set(row.response) == {"info", "usage", "tools", "withheld"}
    assert {"structured", "parts"}.isdisjoint(row.response["info"])
    assert row.response["info"]["role"] == "assistant"
    assert [t["tool"] for t in row.response["tools"]] == trail  # what triage reads instead
    assert row.usage is not None


def test_an_answer_off_its_schema_keeps_its_text_for_triage() -> None:
    """A schema failure broke no turn rule: what it answered is what to look at."""
    _, row = _failed_row(FakeAgent(ScriptedTurn(answer={"argv": "rm -rf /"})))
    assert row.response is not None
    assert row.response["structured"] == {"argv": "rm -rf /"}
    assert "withheld" not in row.response


def test_an_errored_turn_that_cannot_be_read_whole_is_refused_unjudged() -> None:
    """Its steps before the answer went unjudged (a turn of more than 50 steps, or a
    daemon that cannot list them): they may have read anything, so the error it chose
    to end on does not get it another attempt, and none of what it said is kept."""
    turn = ScriptedTurn(answer=EXFILTRATED, earlier_unreadable=True, info_error=NO_STRUCTURE)
    failed, row = _failed_row(FakeAgent(turn))
    assert (row.error_name, failed.kind) == ("TurnNotInspectable", "refused")
    assert row.response is not None
    assert "OTHER-RUNS-SECRET" not in repr(row.response)
    assert set(row.response) == {"info", "usage", "tools", "withheld"}


def test_a_refusal_shows_the_paths_the_model_chose_cut_and_counted() -> None:
    """A path is text the model chose: a refusal names at most 10 uses and 120
    characters of each path, its record at most 50 uses and 4 paths each."""
    spelled = ("S" * 200 + "/") * 19  # 3,819 characters, a name a call can open
    uses = [f"read@/elsewhere/{spelled}", *(f"read@/elsewhere/{i}" for i in range(79))]
    _, row = _failed_row(FakeAgent(ScriptedTurn(answer=ANSWER, earlier_tools=uses)))
    assert row.error_name == "PathOutsideWorktree"
    assert row.error is not None
    assert row.response is not None
    assert "S" * 121 not in row.error + repr(row.response)
    assert "and 70 more" in row.error
    trail = row.response["tools"]
    assert len(trail) == 51
    assert trail[-1] == {"more_uses": 30}
    assert trail[0]["paths"][0].endswith("...[3830 chars]")
    assert trail[1]["paths"] == ["/elsewhere/0"]


SPELLED = "OTHER-RUNS-SECRET-" * 300


def test_an_unjudged_turns_own_error_is_not_kept() -> None:
    """A provider's or the daemon's message may quote the model: a turn whose steps
    went unjudged is refused under kodo's own words, none of its error's."""
    error = {"name": "APIError", "data": {"message": SPELLED, "isRetryable": True}}
    turn = ScriptedTurn(answer=ANSWER, earlier_unreadable=True, info_error=error)
    failed, row = _failed_row(FakeAgent(turn))
    assert row.error_name == "TurnNotInspectable"
    assert "OTHER-RUNS-SECRET-" not in (row.error or "") + failed.error


class _UnlistedTurn(FakeAgent):
    """A daemon whose refusal to list the turn quotes a message's text."""

    def earlier_turn_messages(self, session_id: str, **_: Any) -> list[dict[str, Any]]:
        raise OpenCodeError(f"HTTP 400: Expected string, got {SPELLED}", status=400)


def test_a_turn_that_cannot_be_listed_is_refused_quoting_the_reason_cut_short() -> None:
    _, row = _failed_row(_UnlistedTurn(ScriptedTurn(answer=ANSWER)))
    assert row.error_name == "TurnNotInspectable"
    assert row.error is not None
    assert row.error.count("OTHER-RUNS-SECRET-") <= 200 // len("OTHER-RUNS-SECRET-")


def test_a_blocking_answer_too_large_to_read_is_refused_unjudged() -> None:
    """The model chose the size: its turn's steps cannot be judged, so the call fails
    closed (never retried), billed what its session spent."""
    too_large = AnswerTooLarge("POST message: answer too large; KODO_MAX_ANSWER_BYTES=64")
    turn = ScriptedTurn(error=too_large, session_tokens=tokens(300))
    failed, row = _failed_row(FakeAgent(turn))
    assert (row.status, row.error_name, failed.kind) == ("failed", "TurnNotInspectable", "refused")
    assert "KODO_MAX_ANSWER_BYTES=64" in (row.error or "")
    assert (row.usage or {}).get("total_tokens") == 300


class _ChildrenUnlisted(FakeAgent):
    """A daemon that cannot list a session's children."""

    def session_children(self, session_id: str, *, directory: str) -> list[dict[str, Any]]:
        raise OpenCodeError("HTTP 422: children unreadable (fake)", status=422)


def test_a_turn_whose_child_sessions_cannot_be_listed_is_refused_unjudged() -> None:
    """A child session's steps are the turn's too: unlisted, they are unjudged."""
    failed, row = _failed_row(_ChildrenUnlisted(ScriptedTurn(answer=ANSWER)))
    assert (row.error_name, failed.kind) == ("TurnNotInspectable", "refused")
    assert "cannot list the turn's sessions" in (row.error or "")


def test_the_error_column_is_redacted_like_the_response() -> None:
    """A key spelled into a refused path is as secret in the error as in the trail."""
    key = "sk-" + "a1B2c3D4" * 6
    turn = ScriptedTurn(answer=ANSWER, earlier_tools=[f"read@/elsewhere/{key}"])
    _, row = _failed_row(FakeAgent(turn))
    assert row.error_name == "PathOutsideWorktree"
    assert row.error is not None
    assert key not in row.error
    assert key not in repr(row.response)


class _LoudMetadata(FakeAgent):
    """A daemon whose answer metadata carries text where numbers belong."""

    def _play(self, *args: Any, **kwargs: Any) -> PromptReply:
        reply = super()._play(*args, **kwargs)
        info = {**reply.info, "finish": SPELLED, "time": {"created": 1, "note": SPELLED}}
        return PromptReply(info=info, parts=reply.parts)


def test_a_withheld_records_metadata_keeps_numbers_whole_and_text_cut() -> None:
    turn = ScriptedTurn(answer=ANSWER, earlier_tools=["read@/elsewhere/x"])
    _, row = _failed_row(_LoudMetadata(turn))
    assert row.response is not None
    info = row.response["info"]
    assert info["time"]["created"] == 1
    assert len(info["finish"]) < 160
    assert len(info["time"]["note"]) < 160


def test_a_refusal_for_child_sessions_names_ten_of_them_cut_and_counts_the_rest() -> None:
    children = [{"id": f"ses_{'c' * 100}{i}"} for i in range(25)]
    _, row = _failed_row(FakeAgent(ScriptedTurn(answer=ANSWER, children=children)))
    assert row.error_name == "ChildSessionForbidden"
    assert row.error is not None
    assert "and 15 more" in row.error
    assert "c" * 41 not in row.error


LEAKED = "sk-live0123456789abcdefghijkl"  # a fake key the ledger must not keep


def test_a_secret_in_an_answer_never_reaches_the_ledger_answered_or_refused() -> None:
    said = {**ANSWER, "reason": f"the tests need {LEAKED}"}
    agent = FakeAgent(ScriptedTurn(answer=said, tools=[f"read@/w/{LEAKED}.txt"]))
    ledger = InMemoryLedger()
    result = _calls(agent, ledger).prompt_structured(_call())
    response = ledger.rows[result.op_key].record.response
    assert response is not None
    assert LEAKED not in repr(response), "not in the answer, its tool parts, nor the trail"
    assert response["tools"][0]["paths"] == ["/w/[REDACTED].txt"]
    assert response["structured"]["reason"] == "the tests need [REDACTED]"
    assert response["structured"] is response["info"]["structured"], "redacted once, kept twice"

    _, row = _failed_row(FakeAgent(ScriptedTurn(answer={"argv": LEAKED})))
    assert row.response is not None
    assert LEAKED not in repr(row.response)
    assert row.response["structured"] == {"argv": "[REDACTED]"}
