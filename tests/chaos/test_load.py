"""Two hundred runs at once on two worker processes: all succeed, one call per op_key."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.chaos.conftest import Scenario
from tests.chaos.harness import BASE_WORKER, Chaos

pytestmark = pytest.mark.chaos

RUNS = 200
BOUND_S = 200.0
BACKLOG_TOLERANT = {"KODO_REDISPATCH_AFTER_S": "30"}
"""The default: with the suite's 2 s, the backlog of 200 runs is re-sent until it collapses
(see test_a_backlog_is_not_re_sent_while_it_waits_in_the_broker)."""


def test_two_hundred_runs_submitted_at_once_all_succeed_with_one_call_per_op_key(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = f"{RUNS} runs at once, 2 workers"
    chaos.stop_worker(BASE_WORKER)
    chaos.start_worker(BASE_WORKER, env=BACKLOG_TOLERANT)
    chaos.start_worker("w2", env=BACKLOG_TOLERANT)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        run_ids = list(
            pool.map(lambda n: chaos.submit(f"Add a note to README.md, run {n}"), range(RUNS))
        )
    scenario.track(*run_ids)

    final = chaos.drive(run_ids, BOUND_S)
    seconds = time.monotonic() - started
    scenario.note = f"{RUNS / seconds:.2f} runs/s"
    unfinished = {r: final.get(r) for r in run_ids if final.get(r) != "succeeded"}
    assert unfinished == {}, (
        f"{len(unfinished)} of {RUNS} not succeeded after {BOUND_S}s: "
        f"{sorted(set(unfinished.values()), key=str)}\n{chaos.explain(list(unfinished))}"
    )
    chaos.assert_exactly_once(run_ids)
    with chaos.engine.connect() as conn:
        from sqlalchemy import text

        per_run = conn.execute(
            text(
                "SELECT count(*) FROM app.opencode_calls WHERE run_id = ANY(:ids)"
                " GROUP BY run_id HAVING count(*) <> 3"
            ),
            {"ids": run_ids},
        ).all()
    assert per_run == [], "each run: one plan, one patch, one decision"
