"""A cancel whose abort the daemon does not confirm, on real Postgres and oc-compat.

oc-compat's ``[oc:abort-fails=N]`` plays a daemon that answers the session's next N
aborts with a 500: the turn may still be running, so the call is not recorded ended
on the cancel's word. It stays ``sent`` and the reconciler's sweep aborts it again;
past its deadline plus the abort window it is recorded saying the abort was never
confirmed. A turn the collector saw end needs no confirmation.
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
from shared.db.repos.ledger import LedgerRepo
from shared.domain.call_record import ABORT_UNCONFIRMED
from shared.domain.run_machine import StepId
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, new_run, only_call, uow

pytestmark = pytest.mark.integration

HELD = "Add multiply to calc.py [oc:slow=60000]"
REFUSED = f"{HELD} [oc:abort-fails=100]"


def _parked_and_cancelled(rt: Runtime, repo: Path, goal: str) -> str:
    run_id = new_run(rt, repo, goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    return run_id


def _aborts(oc_url: str) -> int:
    return int(httpx.get(f"{oc_url}/__kodo/stats").json()["aborts"])


def test_a_refused_abort_leaves_the_call_sent_and_the_sweep_aborts_it_again(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, f"{HELD} [oc:abort-fails=1]")

    assert abort_inflight_calls(rt, run_id) == [], "the daemon answered 500: not confirmed"
    assert only_call(rt, run_id)["status"] == "sent", "its turn may still run: not ended"

    assert abort_missed_calls(rt) == [run_id], "the sweep finds the cancelled run's sent call"
    call = only_call(rt, run_id)
    assert (call["status"], call["error_name"]) == ("aborted", "RunCancelled")
    assert ABORT_UNCONFIRMED not in str(call["error"])
    assert call["usage"] is not None, "totals read after the confirmed abort"
    assert call["run_reserved"] == 0, "the run's reservation is settled"
    assert _aborts(oc_url) == 2, "one refused, one confirmed"
    assert abort_missed_calls(rt) == [], "nothing of the run is left to sweep"


def test_an_abort_never_confirmed_is_recorded_so_once_past_its_window(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, REFUSED)

    assert abort_inflight_calls(rt, run_id) == []
    assert only_call(rt, run_id)["status"] == "sent", "within its window: tried again later"

    assert abort_inflight_calls(rt, run_id, give_up_after_s=0) == []
    call = only_call(rt, run_id)
    assert (call["status"], call["error_name"]) == ("aborted", "RunCancelled")
    assert str(call["error"]).endswith(ABORT_UNCONFIRMED), "the record says what is unknown"
    usage = call["usage"]
    assert isinstance(usage, dict), "what the session's totals said when it was given up"
    reserved = call["reserved_tokens"]
    assert isinstance(reserved, int)
    assert reserved > 0
    assert call["spent_tokens"] == max(usage["total_tokens"], reserved)
    assert call["run_reserved"] == 0


def test_the_sweep_gives_up_by_the_database_clock_past_the_deadline_and_window(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, REFUSED)
    window_s = rt.settings.oc_timeout_ms / 1000 + cancel.ABORT_WINDOW_S
    with uow(rt) as work:  # sent just inside the window, then just past it
        work.session.execute(
            text(
                "UPDATE app.opencode_calls SET started_at = statement_timestamp()"
                " - make_interval(secs => :s) WHERE run_id = :r"
            ),
            {"s": window_s - 30, "r": run_id},
        )
    assert abort_missed_calls(rt) == [run_id]
    assert only_call(rt, run_id)["status"] == "sent"
    with uow(rt) as work:
        work.session.execute(
            text(
                "UPDATE app.opencode_calls SET started_at = started_at - interval '60 seconds'"
                " WHERE run_id = :r"
            ),
            {"r": run_id},
        )
    assert abort_missed_calls(rt) == [run_id]
    call = only_call(rt, run_id)
    assert call["status"] == "aborted"
    assert str(call["error"]).endswith(ABORT_UNCONFIRMED)


def test_a_call_whose_turn_the_collector_saw_end_needs_no_confirmed_abort(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _parked_and_cancelled(rt, repo, REFUSED)
    session_id = only_call(rt, run_id)["session_id"]
    assert isinstance(session_id, str)
    with uow(rt) as work:
        LedgerRepo(work.session).wake([session_id])  # the collector's session.idle

    assert abort_inflight_calls(rt, run_id) == [session_id]
    call = only_call(rt, run_id)
    assert call["status"] == "aborted"
    assert ABORT_UNCONFIRMED not in str(call["error"]), "the turn was seen to end"


def test_a_call_on_a_daemon_no_longer_configured_is_given_up_past_its_window(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    run_id = _parked_and_cancelled(make_rt(oc_async=True), repo, HELD)
    elsewhere = make_rt(oc_async=True, oc_base_url="http://127.0.0.1:9")
    assert abort_inflight_calls(elsewhere, run_id) == []
    assert only_call(elsewhere, run_id)["status"] == "sent"
    assert abort_inflight_calls(elsewhere, run_id, give_up_after_s=0) == []
    call = only_call(elsewhere, run_id)
    assert call["status"] == "aborted"
    assert call["usage"] is None, "no daemon to read its totals from"
    assert str(call["error"]).endswith(ABORT_UNCONFIRMED)


def test_a_sweep_takes_the_oldest_cancel_first_and_stops_once_its_time_is_spent(
    make_rt: RuntimeFactory, oc_url: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung daemon makes each abort wait ABORT_S: one pass must not hold the
    reconciler for all of SWEEP_LIMIT of them."""
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    rt = make_rt(clock=clock, oc_async=True)
    newer = _parked_and_cancelled(rt, repo, REFUSED)
    older = _parked_and_cancelled(rt, repo, REFUSED)
    with uow(rt) as work:
        work.session.execute(
            text(
                "UPDATE app.opencode_calls SET started_at = started_at - interval '1 hour'"
                " WHERE run_id = :r"
            ),
            {"r": older},
        )

    def slow_abort(*args: object, **kwargs: object) -> list[str]:
        clock.advance(cancel.SWEEP_BUDGET_S + 1)  # as a hung daemon's abort would take
        return []

    monkeypatch.setattr(cancel, "abort_inflight_calls", slow_abort)
    assert abort_missed_calls(rt) == [older], "the newer cancel waits for the next pass"
    assert only_call(rt, newer)["status"] == "sent"


def test_a_daemon_that_did_not_confirm_is_not_asked_again_in_the_same_pass(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    first = _parked_and_cancelled(rt, repo, REFUSED)
    second = _parked_and_cancelled(rt, repo, REFUSED)
    before = _aborts(oc_url)
    assert sorted(abort_missed_calls(rt)) == sorted([first, second])
    assert _aborts(oc_url) == before + 1, "one refused abort, then the daemon is skipped"
    assert {only_call(rt, run)["status"] for run in (first, second)} == {"sent"}
