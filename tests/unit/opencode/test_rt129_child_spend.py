"""Red-team helper-129: a turn refused for spawning a child session is billed its own
messages only; what the children spent (their totals are in the very listing kodo
reads, GET /session/{id}/children: each a session info with ``tokens`` and ``cost``) is
dropped from the ledger, and its reservation released. The session's own totals do not
include its children's on OpenCode (each session's are its messages'), so the daemon
billed parent + children while kodo spends parent only."""

from __future__ import annotations

import pytest

from shared.opencode.calls import CallFailed
from tests.fakes.agent import ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.test_exactly_once_async import ANSWER, _call, _calls, _held, _send

CHILD = {
    "id": "ses_child1",
    "parentID": "ses_parent",
    "cost": 9.0,
    "tokens": {"input": 600_000, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
}


def test_rt129_a_refused_child_spawning_turn_is_billed_its_children_too() -> None:
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(50_000), children=[CHILD]))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    agent.release(pending.session_id)
    ledger.wake(pending.session_id)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert failed.value.error_name == "ChildSessionForbidden"
    row = ledger.rows[_call().op_key].record
    assert row.usage is not None
    # today: 50,000 tokens and $0 (the parent's messages); the daemon billed 650,000, $9
    assert row.usage["total_tokens"] >= 650_000
    assert row.usage["cost_usd"] >= 9.0
