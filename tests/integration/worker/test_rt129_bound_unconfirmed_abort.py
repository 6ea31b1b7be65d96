"""Red-team helper-129: an over-bound turn whose abort the daemon refuses twice is never
asked again, and runs (and spends) on to its deadline.

The collector's first abort is refused: it wakes the step with ``wake_errored``, which
sets the row's ``idle_at``. From then on ``LedgerRepo.mark_over_bound`` (``idle_at IS
NULL``) matches nothing, so no later report or reconcile aborts the turn again
(``Collector.stop_over_bound`` aborts only the directories the mark returned). The woken
step asks once; refused again, it parks until the call's deadline (``CallPending`` with
``timeout_s - age``) and nothing wakes it. The README's promise ("asked again at the
turn's next report, and by the call's step") holds for one refusal only.
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
from shared.domain.turn_spend import Spent
from shared.opencode.client import OpenCodeClient
from shared.service.messages import InMemorySender
from tests.integration.worker.conftest import new_run

pytestmark = pytest.mark.integration


def test_rt129_an_over_bound_turn_is_aborted_again_after_two_refused_aborts(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    rt = async_rt
    # a first step of 300,000 tokens (bound 200,000), then a held answer; the daemon's
    # first two aborts answer 500 and stop nothing
    goal = "Add multiply to calc.py [oc:spend=300000] [oc:slow=60000] [oc:abort-fails=2]"
    run_id = new_run(rt, repo, goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with rt.sessions() as s:
        session_id, directory = s.execute(
            text(
                "SELECT session_id, request->>'directory' FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
    collector = Collector(
        client, rt.sessions, InMemorySender(), daemon=client.base_url, token_bound=200_000
    )
    collector.reconcile()  # reads the 300,000 tokens: marks, aborts (refused #1), wakes
    assert collector.over_bound == 1
    # the woken step aborts once more (refused #2) and parks until its deadline
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    assert session_id in client.busy_sessions(directory=directory)
    # the turn keeps running and reporting: each report / reconcile must ask again
    collector.reconcile()
    collector.stop_over_bound(session_id, Spent(400_000), 200_000)
    assert collector.over_bound >= 2, "no abort was asked after the step's refusal"
    assert session_id not in client.busy_sessions(directory=directory), (
        "the over-bound turn still runs (and spends) until its deadline"
    )
