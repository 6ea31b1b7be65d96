"""Red-team helper-129: a turn stopped by the token bound is paid for again when the
abort lands between two steps.

Real OpenCode checks its abort at the top of its step loop (prompt.ts ``loop``:
``if (abort.aborted) break``), and the collector aborts right after the
``message.updated`` that ends a step, i.e. between steps (a hostile repository widens the
window: the daemon snapshots the worktree with git between steps). The turn then ends
with no MessageAbortedError: its newest message is the completed step (finish
"tool-calls", no answer). exactly_once._judge refuses under CallTokenBound only an
``OpenCodeAborted`` ending, so this turn is a StructuredOutputMissing (kind
``contract``) and the step sends attempt 2: a new reservation, and the same hostile
turn passes the bound again (up to the step's attempt limit).

oc-compat is extended in this clone with ``[oc:loop-top-abort]``: an abort during the
hold after ``[oc:spend=N]`` ends the turn that way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker.collector import Collector
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from shared.opencode.client import OpenCodeClient
from shared.service.messages import InMemorySender
from tests.integration.worker.conftest import new_run
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_rt129_a_turn_aborted_between_steps_by_the_bound_is_not_tried_again(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    rt = async_rt
    goal = "Add multiply to calc.py [oc:spend=300000] [oc:slow=30000] [oc:loop-top-abort]"
    run_id = new_run(rt, repo, goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    collector = Collector(
        client, rt.sessions, InMemorySender(), daemon=client.base_url, token_bound=200_000
    )
    collector.reconcile()  # 300,000 tokens past the 200,000 bound: marked and aborted
    assert collector.over_bound == 1
    wait_until(collector.reconcile, 10, "the aborted turn to end")
    outcome = run_step(rt, StepId.COMPILE, run_id, compile_step)
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT attempt, status, error_name, spent_tokens FROM app.opencode_calls"
                " WHERE run_id = :r ORDER BY attempt"
            ),
            {"r": run_id},
        ).all()
    # today: [(1, 'failed', 'ContractViolation', 300000), (2, 'sent', None, None)]
    # and the step parked on attempt 2, a second turn of the same hostile prompt
    assert [tuple(r)[:3] for r in rows] == [(1, "aborted", "CallTokenBound")], rows
    assert outcome == "failed"
