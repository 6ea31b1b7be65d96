"""Spreading calls over several daemons, and following each call to its own daemon."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.vocab import CallStatus
from shared.opencode.cache import LruCache
from shared.opencode.calls import CallFailed, CallPending, StructuredCall
from shared.opencode.daemons import DaemonPool, UnknownDaemon
from shared.opencode.errors import OpenCodeUnreachable
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef
from tests.fakes.agent import FakeAgent, ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
A, B = "http://oc-a", "http://oc-b"


class RefusingAgent(FakeAgent):
    """A daemon that is down: every connection is refused."""

    def create_session(self, **_: Any) -> dict[str, Any]:
        raise OpenCodeUnreachable("POST /session: ConnectError: connection refused")


def _pool(a: FakeAgent, b: FakeAgent, clock: FixedClock | None = None) -> DaemonPool:
    return DaemonPool({A: a, B: b}, clock or FixedClock(NOW))


def _calls(pool: DaemonPool, ledger: InMemoryLedger) -> ExactlyOnceCalls:
    return ExactlyOnceCalls(
        pool,
        ledger,
        FixedClock(NOW),
        model=ModelRef("kodo", "kodo-scripted"),
        timeout_s=60,
        l1=LruCache(),
        async_calls=True,
        wait_poll_s=0.0,
    )


def _call(attempt: int = 1, run: str = "run-1") -> StructuredCall:
    return StructuredCall(run, "DecideST", attempt, "plan", "choose", BUILD_OUTPUT_SCHEMA, "/w")


def _turn() -> ScriptedTurn:
    return ScriptedTurn(answer=ANSWER, session_tokens=tokens(10))


def test_runs_are_spread_over_the_daemons_each_with_a_stable_first_choice() -> None:
    pool = _pool(FakeAgent(), FakeAgent())
    firsts = Counter(pool.order(f"key-{i}")[0].url for i in range(1000))
    assert set(firsts) == {A, B}
    assert min(firsts.values()) > 400, firsts
    assert [d.url for d in pool.order("key-7")] == [d.url for d in pool.order("key-7")]


def test_a_daemon_that_refused_a_connection_is_tried_last_for_a_while() -> None:
    clock = FixedClock(NOW)
    pool = _pool(FakeAgent(), FakeAgent(), clock)
    key = next(f"k{i}" for i in range(100) if pool.order(f"k{i}")[0].url == A)
    pool.mark_down(A)
    assert [d.url for d in pool.order(key)] == [B, A]
    clock.advance(pool.down_for_s + 1)
    assert pool.order(key)[0].url == A


def test_a_call_recorded_on_a_daemon_this_worker_does_not_know_fails_closed() -> None:
    with pytest.raises(UnknownDaemon) as refused:
        _pool(FakeAgent(), FakeAgent()).of("http://elsewhere")
    assert refused.value.rule == "daemon_configured"


def test_a_call_is_sent_to_its_daemon_recorded_and_collected_there() -> None:
    a, b = FakeAgent(_turn(), _turn()), FakeAgent(_turn(), _turn())
    a.hold_async = b.hold_async = True
    pool = _pool(a, b)
    ledger = InMemoryLedger()
    with pytest.raises(CallPending) as pending:
        _calls(pool, ledger).prompt_structured(_call())
    assert ledger.mark_sent(pending.value.op_key)  # as the runner does when it parks
    row = ledger.rows[_call().op_key]
    chosen = a if row.daemon == A else b
    other = b if chosen is a else a
    assert row.daemon == pool.order(_call().run_id)[0].url
    assert (len(chosen.sent), len(other.sent)) == (1, 0)
    assert row.session_id is not None
    chosen.release(row.session_id)
    assert _calls(pool, ledger).prompt_structured(_call()).answer == ANSWER
    assert chosen.deleted == [row.session_id]
    assert other.deleted == []


def test_a_daemon_that_refuses_the_connection_sends_the_same_call_to_the_next_one() -> None:
    up = FakeAgent(_turn())
    up.hold_async = True
    ledger = InMemoryLedger()
    probe = _pool(FakeAgent(), FakeAgent())
    key = _call().op_key
    down_first = probe.order(_call().run_id)[0].url
    agents = {down_first: RefusingAgent(), (B if down_first == A else A): up}
    pool = DaemonPool(agents, FixedClock(NOW))
    with pytest.raises(CallPending):
        _calls(pool, ledger).prompt_structured(_call())
    assert ledger.rows[key].daemon != down_first
    assert len(up.sent) == 1, "one prompt, one op_key: nothing was sent to the refuser"
    assert pool.order("another key")[-1].url == down_first


def test_when_every_daemon_refuses_the_call_fails_as_transient_and_unsent() -> None:
    pool = _pool(RefusingAgent(), RefusingAgent())
    ledger = InMemoryLedger()
    with pytest.raises(CallFailed) as failed:
        _calls(pool, ledger).prompt_structured(_call())
    assert failed.value.kind == "transient"
    assert ledger.status(_call().op_key) == CallStatus.FAILED


def test_every_call_of_a_run_goes_to_the_daemon_that_already_knows_its_worktree() -> None:
    a, b = FakeAgent(*[_turn()] * 3), FakeAgent(*[_turn()] * 3)
    a.hold_async = b.hold_async = True
    pool = _pool(a, b)
    ledger = InMemoryLedger()
    for attempt in (1, 2, 3):
        with pytest.raises(CallPending):
            _calls(pool, ledger).prompt_structured(_call(attempt))
    daemons = {ledger.rows[_call(n).op_key].daemon for n in (1, 2, 3)}
    assert daemons == {pool.order("run-1")[0].url}
