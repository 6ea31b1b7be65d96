"""Unjudged turns at the edges: deadlines, late records, listings that quote the model.

Red-team pass 4 (on 39f821b; each case outside "routes found sound" failed there),
with the attacker of test_unjudged_turns.py: a turn that read another run's file on the
way, then answered well. No route retries it unjudged or keeps its text; a daemon's
passing 5xx or a lost session does not fail an honest run closed; a turn that may
still be running stays in doubt.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallFailed
from shared.opencode.errors import (
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTransientError,
    OpenCodeUnreachable,
)
from shared.opencode.messages import PromptReply
from tests.fakes.agent import FakeAgent
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.hostile_turns import (
    ANSWER,
    NOW,
    SECRET,
    TIMEOUT_S,
    MessagesHiccup,
    RanThenBroke,
    bad_request,
    calls,
    escaping_turn,
    fail,
    held,
    honest_turn,
    send,
    the_call,
)


class _ListingQuotes(FakeAgent):
    """The turn's step listing is answered with a 400 quoting a message's text."""

    def earlier_turn_messages(self, session_id: str, **kw: Any) -> list[dict[str, Any]]:
        raise bad_request(SECRET)


def _abort_fails(agent: FakeAgent) -> None:
    def refusing(session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        raise OpenCodeServerError("HTTP 500 (fake): abort", status=500)

    agent.abort = refusing  # type: ignore[method-assign]


# -- a listing's 400 quoting the model's text reaches the refused row's error


def test_a_blocking_turn_whose_listing_400_quotes_the_model_keeps_none_of_it() -> None:
    """_unjudged names only the kind of failure, but the same 400 on the step listing
    goes through assert_turn_rules, whose refusal quotes 200 characters of it."""
    ledger = InMemoryLedger()
    failed = fail(_ListingQuotes(honest_turn()), ledger, async_calls=False)
    row = ledger.rows[the_call().op_key].record
    assert (failed.error_name, failed.kind) == ("TurnNotInspectable", "refused")
    assert SECRET not in (row.error or ""), f"the refused row's error quotes the model: {row.error}"
    assert SECRET not in failed.error


def test_a_collected_turn_whose_listing_400_quotes_the_model_keeps_none_of_it() -> None:
    agent = held(honest_turn(), _ListingQuotes)
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    failed = fail(agent, ledger, async_calls=True)
    row = ledger.rows[the_call().op_key].record
    assert failed.kind == "refused"
    assert SECRET not in (row.error or ""), f"the refused row's error quotes the model: {row.error}"


# -- a turn unreadable for a transient reason at its deadline is timed out, retried


def test_a_woken_turn_whose_last_message_5xxs_until_its_deadline_is_not_retried() -> None:
    """_JudgeLater refuses a turn whose steps stay unreadable until the deadline; a last
    message that stays unreadable (a 5xx) goes to _collect's deadline branch instead:
    timed_out, retried, never judged (no _refuse_stopped there)."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1

    def failing(session_id: str, *, directory: str) -> PromptReply | None:
        raise OpenCodeServerError("HTTP 500 (fake): last message", status=500)

    agent.last_message = failing  # type: ignore[method-assign]
    failed = fail(agent, ledger, async_calls=True)
    assert not failed.retryable, f"recorded {failed.error_name}/{failed.kind}: retried unjudged"


def test_a_busy_turn_stopped_at_its_deadline_whose_steps_5xx_is_not_retried() -> None:
    """Stopped at its deadline (abort confirmed), its steps unreadable (a 5xx):
    _refuse_stopped returns (unread_now) and the call is timed_out and retried."""
    agent = held(escaping_turn(earlier_unreadable=True))
    ledger = InMemoryLedger()
    send(agent, ledger)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1
    failed = fail(agent, ledger, async_calls=True)
    assert not failed.retryable, f"recorded {failed.error_name}/{failed.kind}: retried unjudged"


# -- an honest sent call read at its deadline fails closed on one 5xx


def test_an_honest_turn_collected_at_its_deadline_survives_one_daemon_5xx() -> None:
    """The deadline sweep (its session.idle missed, the collector restarting) reads an
    ended honest turn once: one 5xx and it is refused TurnNotInspectable, failing the
    run closed. A blocking call reads INSPECT_TRIES times; this read is the last too."""
    agent = held(honest_turn(), MessagesHiccup)
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1
    result = calls(agent, ledger, async_calls=True).prompt_structured(the_call())
    assert result.answer == ANSWER


# -- a blocking prompt's 404 (no turn ran) fails the run closed


def test_a_blocking_prompt_answered_404_is_not_refused_as_unjudged() -> None:
    """POST /session/{id}/message answered 404 (the daemon lost the session before the
    prompt: nothing ran). _call refuses every non-transient error of a blocking send as
    a turn kodo cannot read; _collected calls the same 404 SessionLost (transient)."""

    class _Lost(FakeAgent):
        def prompt(self, session_id: str, **kw: Any) -> PromptReply:
            self.sessions[session_id] = self.script.popleft()  # (its totals: none spent)
            raise OpenCodePermanentError(
                "HTTP 404 NotFoundError: Session not found", status=404, name="NotFoundError"
            )

    ledger = InMemoryLedger()
    failed = fail(_Lost(honest_turn()), ledger, async_calls=False)
    assert failed.retryable, f"an honest run failed closed: {failed.error_name}/{failed.kind}"


# -- a turn cut by a 5xx whose abort went unconfirmed is forgotten, not in doubt


def test_a_blocking_turn_cut_by_a_5xx_whose_abort_failed_stays_in_doubt() -> None:
    """The 5xx path judges what the turn shows so far (settled=False) and then records
    an ordinary transient failure and deletes the session: no ABORT_UNCONFIRMED, not in
    sessions_in_doubt, so the next attempt's quiesce neither aborts nor waits for a turn
    that may still be running (its later steps never judged) on the same worktree."""
    agent = RanThenBroke(OpenCodeServerError("HTTP 502 (fake): proxy", status=502), honest_turn())
    _abort_fails(agent)
    ledger = InMemoryLedger()
    failed = fail(agent, ledger, async_calls=False)
    assert failed.retryable
    doubtful = ledger.sessions_in_doubt("run-1", "DecideST")
    assert doubtful, (
        f"recorded {ledger.status(the_call().op_key)} {failed.error_name}, session deleted"
        f" {agent.deleted}: the unstopped turn is in no one's doubt"
    )


# -- routes found sound -----------------------------------------------------------------


def test_a_stopped_refusal_after_another_delivery_recorded_reads_theirs_back() -> None:
    """_refuse_stopped in _collected's busy branch: another delivery recorded first ->
    _CollectedElsewhere -> its record is read back; the session is not deleted here."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    send(agent, ledger)
    key = the_call().op_key
    ledger.rows[key].age_s = TIMEOUT_S + 1
    real_abort = agent.abort

    def abort_then_other_records(session_id: str, **kw: Any) -> bool:
        done = real_abort(session_id, **kw)
        from shared.opencode.calls import CallOutcome

        ledger.finish(
            key,
            CallOutcome(CallStatus.FAILED, NOW, 1, error_name="TurnLost", error="other"),
            from_status=CallStatus.SENT,
        )
        return done

    agent.abort = abort_then_other_records  # type: ignore[method-assign]
    failed = fail(agent, ledger, async_calls=True)
    assert (failed.replayed, failed.error_name) == (True, "TurnLost")
    assert agent.deleted == []


def test_an_unjudged_collect_after_another_delivery_recorded_reads_theirs_back() -> None:
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    pending = send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    key = the_call().op_key

    def not_json(session_id: str, *, directory: str) -> PromptReply | None:
        from shared.opencode.calls import CallOutcome

        ledger.finish(
            key,
            CallOutcome(CallStatus.SUCCEEDED, NOW, 1, response={"structured": ANSWER}, usage={}),
            from_status=CallStatus.SENT,
        )
        raise OpenCodePermanentError("GET messages: body is not JSON: x")

    agent.last_message = not_json  # type: ignore[method-assign]
    result = calls(agent, ledger, async_calls=True).prompt_structured(the_call())
    assert (result.cache, agent.deleted) == ("l2", [])


def test_async_send_5xx_honest_turn_is_a_transient_failure() -> None:
    class _AsyncBroke(FakeAgent):
        def prompt_async(self, session_id: str, **kw: Any) -> None:
            super().prompt_async(session_id, **kw)
            raise OpenCodeTransientError("POST prompt_async: RemoteProtocolError: peer closed")

    ledger = InMemoryLedger()
    failed = fail(_AsyncBroke(honest_turn()), ledger, async_calls=True)
    assert (failed.kind, failed.retryable) == ("transient", True)


# -- a refusal recorded late (after another delivery declared the call unknown)


def test_a_refusal_recorded_after_the_call_was_declared_unknown_replays_refused() -> None:
    """A blocking turn past its deadline is now aborted (ABORT_S up to 10 s), read and
    re-read (INSPECT_RETRY_S 1 + 2 s) and billed (up to 10 s) before its refusal is
    recorded: well past CLAIM_GRACE_S (5 s), after which a delivery waiting on the claim
    declares it unknown. The refusal then lands as failed_late, CallSuperseded, and
    every reader reads the row as OutcomeUnknown (kind unknown): retried, the broken
    rule acted on by nobody."""
    from shared.opencode.calls import CallOutcome, CallSuperseded
    from tests.fakes.agent import no_answer_in_time

    agent = RanThenBroke(no_answer_in_time(), escaping_turn())
    ledger = InMemoryLedger()
    key = the_call().op_key
    real_abort = agent.abort

    def abort_while_another_declares(session_id: str, **kw: Any) -> bool:
        ledger.finish(
            key,
            CallOutcome(CallStatus.UNKNOWN, NOW, None, error_name="OutcomeUnknown", error="x"),
            from_status=CallStatus.CLAIMED,
        )
        return real_abort(session_id, **kw)

    agent.abort = abort_while_another_declares  # type: ignore[method-assign]
    with pytest.raises(CallSuperseded):
        calls(agent, ledger, async_calls=False).prompt_structured(the_call())
    row = ledger.rows[key].record
    assert (row.status, row.error_name) == (CallStatus.FAILED_LATE, "PathOutsideWorktree")
    replay = fail(agent, ledger, async_calls=False)
    assert replay.kind == "refused", (
        f"the late refusal reads back {replay.error_name}/{replay.kind}"
    )


# -- a daemon that cannot be reached is not waited on ----------------------------------


def test_an_overdue_call_on_an_unreachable_daemon_is_timed_out_without_waiting() -> None:
    """Re-reading is for a daemon that answers a 5xx: one that cannot be reached at all
    cannot tell kodo anything, and a dead daemon's overdue calls must not each hold a
    worker thread for the retries. Timed out at once (the documented exception)."""
    agent = held(escaping_turn())
    ledger = InMemoryLedger()
    send(agent, ledger)
    ledger.rows[the_call().op_key].age_s = TIMEOUT_S + 1

    def unreachable(*_: Any, **__: Any) -> Any:
        raise OpenCodeUnreachable("connection refused (fake)")

    agent.busy_sessions = unreachable  # type: ignore[method-assign]
    agent.last_message = unreachable  # type: ignore[method-assign]
    agent.abort = unreachable  # type: ignore[method-assign]
    clock = FixedClock(NOW)
    protocol = calls(agent, ledger, async_calls=True, clock=clock, abort_window_s=0.0)
    with pytest.raises(CallFailed) as failed:
        protocol.prompt_structured(the_call())
    assert failed.value.kind == "timeout"
    assert clock.monotonic() == 0.0, "it waited on a daemon that cannot be reached"
