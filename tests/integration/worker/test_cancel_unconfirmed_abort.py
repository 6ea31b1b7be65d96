"""A cancel whose abort the daemon does not confirm, on real Postgres and oc-compat.

oc-compat's ``[oc:abort-fails=N]`` plays a daemon that answers the session's next N
aborts with a 500: the turn may still be running, so the call is not recorded ended
on the cancel's word. It stays ``sent`` and the reconciler's sweep aborts it again;
past its deadline plus the abort window it is recorded saying the abort was never
confirmed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.worker import cancel
from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.clock import FixedClock
from shared.domain.call_record import ABORT_UNCONFIRMED
from shared.domain.run_machine import StepId
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, new_run, uow

pytestmark = pytest.mark.integration

HELD = "Add multiply to calc.py [oc:slow=60000]"


def _parked_and_cancelled(rt: Runtime, repo: Path, goal: str) -> str:
    run_id = new_run(rt, repo, goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    return run_id


def _call(rt: Runtime, run_id: str) -> dict[str, object]:
    with rt.sessions() as s:
        row = s.execute(
            text(
                "SELECT status, session_id, error_name, error, usage, spent_tokens,"
                " reserved_tokens FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        ).mappings()
        [call] = [dict(r) for r in row]
        return call


def _aborts(oc_url: str) -> int:
    return int(httpx.get(f"{oc_url}/__kodo/stats").json()["aborts"])


def test_a_refused_abort_leaves_the_call_sent_and_the_sweep_aborts_it_again(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, f"{HELD} [oc:abort-fails=1]")

    assert abort_inflight_calls(rt, run_id) == [], "the daemon answered 500: not confirmed"
    assert _call(rt, run_id)["status"] == "sent", "its turn may still run: not ended"

    assert abort_missed_calls(rt) == [run_id], "the sweep finds the cancelled run's sent call"
    call = _call(rt, run_id)
    assert (call["status"], call["error_name"]) == ("aborted", "RunCancelled")
    assert ABORT_UNCONFIRMED not in str(call["error"])
    assert call["usage"] is not None, "totals read after the confirmed abort"
    assert _aborts(oc_url) >= 1
    assert abort_missed_calls(rt) == [], "nothing of the run is left to sweep"


def test_an_abort_never_confirmed_is_recorded_so_once_past_its_window(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, f"{HELD} [oc:abort-fails=100]")

    assert abort_inflight_calls(rt, run_id) == []
    assert _call(rt, run_id)["status"] == "sent", "within its window: tried again later"

    assert abort_inflight_calls(rt, run_id, give_up_after_s=0) == []
    call = _call(rt, run_id)
    assert (call["status"], call["error_name"]) == ("aborted", "RunCancelled")
    assert str(call["error"]).endswith(ABORT_UNCONFIRMED), "the record says what is unknown"
    assert call["usage"] is None, "no totals: the daemon never said the turn stopped"
    reserved = call["reserved_tokens"]
    assert isinstance(reserved, int) and reserved > 0
    assert call["spent_tokens"] == reserved, "settled at its reservation, the bound it was given"


def test_a_sweep_stops_starting_aborts_once_its_time_is_spent(
    make_rt: RuntimeFactory, oc_url: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung daemon makes each abort wait ABORT_S: one pass must not hold the
    reconciler for all of SWEEP_LIMIT of them. The oldest cancel goes first."""
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    rt = make_rt(clock=clock, oc_async=True)
    first = _parked_and_cancelled(rt, repo, f"{HELD} [oc:abort-fails=100]")
    second = _parked_and_cancelled(rt, repo, f"{HELD} [oc:abort-fails=100]")

    def slow_abort(*args: object) -> list[str]:
        clock.advance(cancel.SWEEP_BUDGET_S + 1)  # as a hung daemon's abort would take
        return []

    monkeypatch.setattr(cancel, "abort_inflight_calls", slow_abort)
    assert abort_missed_calls(rt) == [first], "the second run waits for the next pass"
    assert _call(rt, second)["status"] == "sent"
