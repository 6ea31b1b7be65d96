"""Redis losing every message, or Postgres crashing, mid-run: every run still ends.

Postgres is the only source of truth; the reconciler re-dispatches from it alone.
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import Scenario
from tests.chaos.harness import BASE_WORKER, Chaos
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos

RUNS = 6
BOUND_S = 60.0
DOWN_S = 3.0


def _submit_and_wait_for_compiling(chaos: Chaos, scenario: Scenario) -> list[str]:
    """Submit RUNS slow runs; return once a call is in flight while others wait their turn.

    The worker is down while they are submitted, so every message waits in Redis; once it
    is back (two at a time), some calls are in flight while the other runs still wait.
    """
    chaos.stop_worker(BASE_WORKER)
    run_ids = [
        chaos.submit(f"Add a note to README.md, number {n} [oc:slow=1000]") for n in range(RUNS)
    ]
    scenario.track(*run_ids)
    chaos.start_worker(BASE_WORKER)

    def in_flight_with_some_waiting() -> bool:
        entered = [r for r in run_ids if chaos.step_run(r, "CompileST") is not None]
        return bool(chaos.in_flight_at_oc()) and len(entered) < len(run_ids)

    wait_until(
        in_flight_with_some_waiting,
        20,
        "a call in flight at oc-compat while other runs' CompileST messages wait in Redis",
        detail=lambda: chaos.explain(run_ids),
    )
    return run_ids


def _all_succeed_within_bound(chaos: Chaos, run_ids: list[str]) -> None:
    final = chaos.drive(run_ids, BOUND_S)
    unfinished = [r for r in run_ids if final.get(r) != "succeeded"]
    assert unfinished == [], (
        f"{len(unfinished)} of {len(run_ids)} runs not succeeded within {BOUND_S}s: "
        f"{ {r: final.get(r) for r in unfinished} }\n{chaos.explain(unfinished)}\n{chaos.logs()}"
    )
    chaos.assert_exactly_once(run_ids)


def test_runs_survive_a_redis_restart_that_loses_every_queued_message(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "restart Redis mid-run"
    run_ids = _submit_and_wait_for_compiling(chaos, scenario)
    chaos.restart_redis(down_s=DOWN_S)
    _all_succeed_within_bound(chaos, run_ids)


def test_runs_survive_a_redis_flushall_mid_run(chaos: Chaos, scenario: Scenario) -> None:
    scenario.name = "Redis FLUSHALL mid-run"
    run_ids = _submit_and_wait_for_compiling(chaos, scenario)
    chaos.flush_redis()
    _all_succeed_within_bound(chaos, run_ids)


def test_runs_survive_a_postgres_crash_and_restart_mid_run(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "restart Postgres mid-run"
    run_ids = _submit_and_wait_for_compiling(chaos, scenario)
    chaos.restart_postgres(down_s=DOWN_S)
    _all_succeed_within_bound(chaos, run_ids)
