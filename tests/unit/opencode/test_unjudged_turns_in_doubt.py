"""A refused turn that may still be running stays in doubt for the step's next reset.

Red-team pass 5 (on 1008348; each case outside "routes found sound" failed there).

The attacker is the one of hostile_turns.py: a build turn that reads another run's file
on the way. Here its daemon also fails to confirm the abort (a 5xx), so the turn may
still be running, editing the worktree, when kodo records its refusal. ApplyPatchST's
``_undo`` and every later attempt (a retry of the failed run too) reset the worktree
after ``quiesce``, which waits only for the sessions ``sessions_in_doubt`` names.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallFailed, StructuredCall
from shared.opencode.errors import OpenCodeServerError, WorktreeBusy
from shared.opencode.exactly_once import ExactlyOnceCalls
from tests.fakes.agent import FakeAgent, ScriptedTurn, no_answer_in_time, tokens
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.hostile_turns import (
    ESCAPE,
    NOW,
    TIMEOUT_S,
    RanThenBroke,
    calls,
    held,
    honest_turn,
)

EDIT = {"summary": "A small change.", "files": ["calc.py"]}
STEP = "ApplyPatchST"


def _build_call() -> StructuredCall:
    return StructuredCall("run-1", STEP, 1, "build", "edit", EDIT_REPORT_SCHEMA, "/w")


def _escaping_build_turn() -> ScriptedTurn:
    return ScriptedTurn(answer=EDIT, session_tokens=tokens(50), earlier_tools=[ESCAPE])


def _daemon_fails_abort_and_delete(agent: FakeAgent) -> None:
    """A daemon answering 5xx to the abort (the turn runs on: still busy) and to the
    deletion kodo tries after recording the refusal."""

    def refusing_abort(session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        agent.aborted.append(session_id)
        agent.busy.add(session_id)  # unstopped: it is still running, editing /w
        raise OpenCodeServerError("HTTP 500 (fake): abort", status=500)

    def refusing_delete(session_id: str, *, directory: str) -> bool:
        raise OpenCodeServerError("HTTP 500 (fake): delete", status=500)

    agent.abort = refusing_abort  # type: ignore[method-assign]
    agent.delete_session = refusing_delete  # type: ignore[method-assign]


def _refused(protocol: ExactlyOnceCalls) -> CallFailed:
    with pytest.raises(CallFailed) as failed:
        protocol.prompt_structured(_build_call())
    return failed.value


def _assert_reset_waits(
    protocol: ExactlyOnceCalls, agent: FakeAgent, ledger: InMemoryLedger
) -> None:
    key = _build_call().op_key
    row = ledger.rows[key].record
    busy = sorted(agent.busy)
    assert busy, "the scenario needs the refused turn still running"
    doubtful = ledger.sessions_in_doubt("run-1", STEP)
    try:
        protocol.quiesce("run-1", STEP, "/w")
    except WorktreeBusy:
        return  # the reset waits (fails worktree_quiet): sound
    pytest.fail(
        f"refused turn recorded {row.status} {row.error_name}, its abort unconfirmed and"
        f" session {busy} still busy, but sessions_in_doubt={doubtful}: quiesce returned"
        " at once, so ApplyPatchST's _undo (and a retry's next attempt) resets the worktree"
        " under a turn that is still editing it"
    )


# -- a refused turn whose abort went unconfirmed stays in doubt ----------


def test_blocking_refusal_at_deadline_with_unconfirmed_abort_stays_in_doubt() -> None:
    """Its abort unconfirmed, the refusal is recorded ``timed_out`` under the rule (in
    doubt) and its session kept: 'aborted' would let the next reset go ahead."""
    agent = RanThenBroke(no_answer_in_time(), _escaping_build_turn())
    _daemon_fails_abort_and_delete(agent)
    ledger = InMemoryLedger()
    protocol = calls(agent, ledger, async_calls=False, quiesce_s=0.0, wait_poll_s=0.5)
    failed = _refused(protocol)
    assert (failed.kind, failed.error_name) == ("refused", "PathOutsideWorktree")
    assert failed.status == CallStatus.TIMED_OUT
    _assert_reset_waits(protocol, agent, ledger)


def test_blocking_refusal_after_a_5xx_with_unconfirmed_abort_stays_in_doubt() -> None:
    """The 5xx route: a turn that already broke a rule is refused, and stays in doubt as
    an honest one does (timed_out, its session kept)."""
    agent = RanThenBroke(OpenCodeServerError("HTTP 502 (fake)", status=502), _escaping_build_turn())
    _daemon_fails_abort_and_delete(agent)
    ledger = InMemoryLedger()
    protocol = calls(agent, ledger, async_calls=False, quiesce_s=0.0, wait_poll_s=0.5)
    failed = _refused(protocol)
    assert (failed.kind, failed.status) == ("refused", CallStatus.TIMED_OUT)
    _assert_reset_waits(protocol, agent, ledger)


def test_collected_refusal_past_the_abort_window_stays_in_doubt() -> None:
    """Busy at its deadline, its abort unconfirmed past the window: the steps it shows so
    far are refused, and the turn stays in doubt."""
    agent = held(_escaping_build_turn())
    ledger = InMemoryLedger()
    from shared.opencode.calls import CallPending

    with pytest.raises(CallPending) as pending:
        calls(agent, ledger, async_calls=True).prompt_structured(_build_call())
    sid = pending.value.session_id
    assert ledger.mark_sent(pending.value.op_key)
    agent.replies[sid] = agent.held[sid][1]  # the running turn shows its steps so far
    ledger.rows[_build_call().op_key].age_s = TIMEOUT_S + 1
    _daemon_fails_abort_and_delete(agent)
    protocol = calls(
        agent, ledger, async_calls=True, abort_window_s=0.0, quiesce_s=0.0, wait_poll_s=0.5
    )
    failed = _refused(protocol)
    assert (failed.kind, failed.status) == ("refused", CallStatus.TIMED_OUT)
    _assert_reset_waits(protocol, agent, ledger)


# -- the 5xx route stops and reads an unconfirmed turn once -------------------


def test_a_5xx_with_unconfirmed_abort_aborts_and_reads_the_turn_once() -> None:
    """One cut turn is stopped and judged once: a second abort (ABORT_S) and a second
    round of reads (INSPECT_TRIES, 1 + 2 s) would double a worker thread's hold."""

    class _Reads(RanThenBroke):
        reads = 0

        def last_message(self, session_id: str, *, directory: str) -> Any:
            type(self).reads += 1
            return super().last_message(session_id, directory=directory)

    agent = _Reads(OpenCodeServerError("HTTP 502 (fake)", status=502), honest_turn())
    _daemon_fails_abort_and_delete(agent)
    ledger = InMemoryLedger()
    clock = FixedClock(NOW)
    with pytest.raises(CallFailed) as failed:
        calls(agent, ledger, async_calls=False, clock=clock).prompt_structured(_build_call())
    assert failed.value.status == CallStatus.TIMED_OUT
    assert (len(agent.aborted), _Reads.reads) == (1, 1), (
        f"aborted {len(agent.aborted)}x, last message read {_Reads.reads}x for one cut turn"
    )


# -- routes found sound ------------------------------------------------------------------


def test_an_aborted_refusal_replays_refused() -> None:
    agent = RanThenBroke(no_answer_in_time(), _escaping_build_turn())
    ledger = InMemoryLedger()
    first = _refused(calls(agent, ledger, async_calls=False))
    assert first.status == CallStatus.ABORTED
    replay = _refused(calls(agent, ledger, async_calls=False))
    assert (replay.replayed, replay.kind, replay.retryable) == (True, "refused", False)
