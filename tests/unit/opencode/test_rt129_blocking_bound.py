"""Red-team helper-129: with OC_ASYNC=0 (blocking calls, a documented mode) a turn the
collector aborted for passing its token bound is retried.

The collector marks claimed calls too (LedgerRepo.mark_over_bound: ``status IN OPEN``)
and aborts the turn; the blocking prompt then returns its MessageAbortedError reply, and
ExactlyOnceCalls._call judges it with ``self._judge(..., CallStatus.CLAIMED)``: no
``over_bound`` is passed (only _collected reads the row's mark), so the abort is recorded
as a plain OpenCodeAborted, kind ``transient`` (OpenCodeAborted subclasses
OpenCodeTransientError), which services/worker/steps/attempts.py retries with backoff;
the mark is overwritten by the abort's error.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallFailed
from tests.fakes.agent import FakeAgent, ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.test_exactly_once_async import _call, _calls, _marked_over_bound

ABORTED = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}


def test_rt129_a_blocking_call_aborted_by_the_bound_is_refused_not_retried() -> None:
    agent = FakeAgent(ScriptedTurn(session_tokens=tokens(250_000), info_error=ABORTED))
    ledger = InMemoryLedger()
    real_prompt = agent.prompt

    def prompt(*args: Any, **kwargs: Any) -> Any:
        # while the prompt blocks, the collector sees 250,000 tokens, marks the claimed
        # call and aborts the turn; the prompt returns the aborted reply
        mark[0] = _marked_over_bound(ledger)
        return real_prompt(*args, **kwargs)

    mark = [""]
    agent.prompt = prompt  # type: ignore[method-assign]
    calls = _calls(agent, ledger, async_calls=False)
    with pytest.raises(CallFailed) as failed:
        calls.prompt_structured(_call())
    row = ledger.rows[_call().op_key].record
    # today: kind "transient", error_name OpenCodeAborted: retried with backoff
    assert failed.value.kind == "refused"
    assert (row.status, row.error_name, row.error) == (
        CallStatus.ABORTED,
        "CallTokenBound",
        mark[0],
    )
