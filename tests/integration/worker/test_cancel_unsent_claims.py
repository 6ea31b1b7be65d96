"""What a cancel does to calls in the gap between claim and send (red-team helper-100):
a claim whose claimant died before its session was made was never sent, so the
cancel's sweep gives it up as NeverSent, its reservation released (no later delivery
enters a cancelled run's step to give it up); a blocking call (OC_ASYNC=0) whose
prompt left after the cancel's abort found its session idle is aborted by the
reconciler's next pass, not left to run to its end.

Real Postgres, real oc-compat, in-process steps; the claimant's death is staged by
wrapping kodo's own call protocol at one point; the database and daemon are real.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    new_run,
    step_in_background,
    uow,
    wait_lease_lapsed,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _cancel(rt: Runtime, run_id: str) -> bool:
    with uow(rt) as work:
        return cancel_run(work, run_id, now=rt.clock.now())[1]


def _stats(rt: Runtime) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    return stats


def _apply_calls(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT attempt, status, session_id, error_name, reserved_usd_micro,"
                " reserved_tokens, spent_usd_micro, spent_tokens, settled_at IS NOT NULL AS settled"
                " FROM app.opencode_calls WHERE run_id = :r AND step_id = 'ApplyPatchST'"
                " ORDER BY attempt"
            ),
            {"r": run_id},
        ).mappings()
        return [dict(r) for r in rows]


def _run_money(rt: Runtime, run_id: str) -> dict[str, Any]:
    with rt.sessions() as s:
        row = s.execute(
            text(
                "SELECT r.status, r.reserved_usd_micro, r.reserved_tokens,"
                " (SELECT coalesce(sum(c.reserved_usd_micro), 0) FROM app.opencode_calls c"
                "   WHERE c.run_id = r.id AND c.settled_at IS NULL) AS unsettled_usd"
                " FROM app.runs r WHERE r.id = :r"
            ),
            {"r": run_id},
        ).mappings()
        return dict(row.one())


def _approved_run(make_rt: RuntimeFactory, repo: Path, goal: str) -> str:
    patient = make_rt(oc_timeout_ms=20000)
    run_id = new_run(patient, repo, goal=goal)
    assert run_step(patient, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(patient, run_id)
    return run_id


def test_a_sessionless_claim_of_a_cancelled_run_whose_claimant_died_is_released(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """ApplyPatchST claims attempt 1 (no session yet: prepare first) and its worker dies
    before mark_started. The run is cancelled. No delivery enters a cancelled run's step,
    so nobody reads the claim overdue and records it NeverSent; the sweep takes only
    claims with a session. The claim, provably never sent, holds its reservation for
    good. The cancel's sweep now gives it up."""
    run_id = _approved_run(make_rt, repo, "Add multiply to calc.py")
    rt = make_rt(oc_timeout_ms=1000, step_lease_s=1)
    gate = threading.Event()
    died = threading.Event()

    class _Died(BaseException):
        """The worker process ends here (nothing after it runs)."""

    def dead_prepare(*_: Any, **__: Any) -> Any:
        died.set()
        gate.wait(60)
        raise _Died

    real_start = rt.oc._start

    def never_starts(*args: Any, **kwargs: Any) -> Any:
        dead_prepare()
        return real_start(*args, **kwargs)

    rt.oc._start = never_starts  # type: ignore[method-assign]

    def body() -> None:
        with contextlib.suppress(_Died):
            run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)

    worker = threading.Thread(target=body)
    worker.start()
    assert died.wait(30), "ApplyPatchST never reached its send"
    # the worker is "dead" from here: its lease keeper stops with it
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)
    gate.set()
    worker.join(30)
    wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
    abort_missed_calls(rt)  # the reconciler's sweep of cancelled runs
    abort_inflight_calls(rt, run_id)

    (call,) = _apply_calls(rt, run_id)
    money = _run_money(rt, run_id)
    assert _stats(rt)["by_title"].get(f"kodo ApplyPatchST {run_id} #1") is None
    assert call["session_id"] is None
    assert (call["status"], call["error_name"], call["settled"]) == ("failed", "NeverSent", True)
    assert (call["spent_usd_micro"], call["spent_tokens"]) == (0, 0)
    assert (money["reserved_usd_micro"], money["reserved_tokens"]) == (0, 0), money


class _Stall:
    """Wraps ``rt.oc.ledger.<name>``: the real call runs (and commits), then the calling
    thread waits until released: a worker descheduled at exactly that point."""

    def __init__(self, rt: Runtime, name: str) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        ledger = rt.oc.ledger
        real = getattr(ledger, name)

        def stalled(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            self.reached.set()
            self.go.wait(60)
            return result

        setattr(ledger, name, stalled)


def test_a_blocking_prompt_sent_after_the_cancels_abort_is_cut_by_the_next_sweep(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """OC_ASYNC=0: the session is recorded (the run still at its status), the worker is
    descheduled before the blocking send, the run is cancelled and its abort finds the
    session idle. The prompt then leaves. It ran to its end, recorded succeeded (and the
    build agent edited the cancelled run's worktree meanwhile); the reconciler's sweep
    of cancelled runs now aborts a live claimant's call too, each pass until recorded."""
    run_id = _approved_run(make_rt, repo, "Add multiply to calc.py [oc:slow=8000]")
    rt = make_rt(oc_timeout_ms=20000)  # oc_async=False (the fixture's default)
    stall = _Stall(rt, "mark_started")
    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    assert stall.reached.wait(30), "ApplyPatchST never recorded its session"
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)  # what the worker's AbortCalls does: the session idles
    stall.go.set()
    title = f"kodo ApplyPatchST {run_id} #1"
    wait_until(lambda: _stats(rt)["by_title"].get(title) == 1, 15, "the prompt to leave")
    assert abort_missed_calls(rt) == [run_id], "the sweep lists the cancelled run"
    worker.join(30)
    assert not worker.is_alive()

    (call,) = _apply_calls(rt, run_id)
    assert call["status"] == "aborted", (call, outcome)
