"""Cancel takes effect before the next step and aborts the provider call in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from services.worker.cancel import abort_inflight_calls
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from shared.db.models import OpenCodeCall, PlanApproval, Run
from shared.domain.run_machine import StepId
from shared.errors import Conflict
from shared.service.runs import approve_plan, cancel_run, reject_plan
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    new_run,
    step_in_background,
    uow,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _cancel(rt: Runtime, run_id: str) -> bool:
    with uow(rt) as work:
        return cancel_run(work, run_id, now=rt.clock.now())[1]


def _call_statuses(rt: Runtime, run_id: str) -> list[str]:
    with rt.sessions() as s:
        return list(
            s.execute(select(OpenCodeCall.status).where(OpenCodeCall.run_id == run_id)).scalars()
        )


def _in_flight_at_server(rt: Runtime) -> int:
    """Prompts oc-compat holds open right now (its own count, over all sessions)."""
    stats = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    return sum(stats["in_flight"].values())


def test_cancelling_mid_call_aborts_it_and_the_step_records_nothing(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:slow=8000]")
    started = time.monotonic()
    worker, outcome = step_in_background(rt, StepId.COMPILE, run_id, compile_step)
    wait_until(lambda: _call_statuses(rt, run_id) == ["claimed"], 5, "the call to be claimed")
    wait_until(lambda: _in_flight_at_server(rt), 5, "the prompt to be in flight at oc-compat")
    assert _cancel(rt, run_id) is True
    assert abort_inflight_calls(rt, run_id) != []
    worker.join(10)
    assert outcome == ["superseded"]
    assert time.monotonic() - started < 6, "the 8 s call was cut short"
    assert _call_statuses(rt, run_id) == ["aborted"], "no second attempt after the cancel"
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.status == "cancelled"
        assert run.finished_at is not None


def test_a_cancelled_run_runs_no_further_step(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert _cancel(rt, run_id) is True
    assert _cancel(rt, run_id) is False, "cancelling twice is a no-op"
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "skipped"
    with pytest.raises(Conflict), uow(rt) as work:
        approve_plan(work, run_id, approver="late", now=rt.clock.now())


def test_racing_approve_reject_and_cancel_leave_one_consistent_outcome(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    barrier = threading.Barrier(3)
    results: dict[str, str] = {}

    def act(name: str) -> None:
        barrier.wait()
        try:
            with uow(rt) as work:
                if name == "cancel":
                    cancel_run(work, run_id, now=rt.clock.now())
                elif name == "approve":
                    approve_plan(work, run_id, approver=name, now=rt.clock.now())
                else:
                    reject_plan(work, run_id, approver=name, now=rt.clock.now())
            results[name] = "ok"
        except Conflict:
            results[name] = "conflict"

    threads = [threading.Thread(target=act, args=(n,)) for n in ("approve", "reject", "cancel")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        decisions = set(
            s.execute(select(PlanApproval.decision).where(PlanApproval.run_id == run_id)).scalars()
        )
    # Cancel succeeds unless reject came first; whichever ended the run, the other lost.
    assert run.status in {"rejected", "cancelled"}
    assert [results["reject"], results["cancel"]].count("ok") == 1
    if run.status == "rejected":
        assert decisions == {"rejected"}
        assert results["approve"] == "conflict"
    else:
        assert "rejected" not in decisions


def _apply_calls(rt: Runtime, run_id: str) -> list[tuple[int, str, str | None, str | None]]:
    """ApplyPatchST's calls: (attempt, status, session id, error name)."""
    with rt.sessions() as s:
        rows = s.execute(
            select(
                OpenCodeCall.attempt,
                OpenCodeCall.status,
                OpenCodeCall.session_id,
                OpenCodeCall.error_name,
            )
            .where(OpenCodeCall.run_id == run_id, OpenCodeCall.step_id == "ApplyPatchST")
            .order_by(OpenCodeCall.attempt)
        ).all()
    return [(r.attempt, r.status, r.session_id, r.error_name) for r in rows]


def _prompts_titled(rt: Runtime, title: str) -> int:
    stats = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    return int(stats["by_title"].get(title, 0))


def test_a_cancel_while_a_claimed_call_is_prepared_sends_no_prompt_and_releases_it(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """ApplyPatchST claims its next attempt, then prepares it (waits up to quiesce_s for
    the earlier attempt's session to go quiet, resets the worktree), then sends. A
    cancel in that while found no session to abort, and the cancelled run's prompt left
    afterwards and was paid (red-team helper-96). The session is recorded only while the
    run is still at the step's status: refused, nothing is sent, and the claim is
    recorded failed with nothing spent."""
    # Slow turns whose aborts fail: attempt 1 times out at 1.5 s, its abort
    # unconfirmed, so attempt 2's prepare waits for its session to go quiet.
    goal = "Add multiply to calc.py [oc:slow=4000] [oc:abort-fails=20]"
    patient = make_rt(oc_timeout_ms=20000)
    run_id = new_run(patient, repo, goal=goal)
    assert run_step(patient, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(patient, run_id)

    rt = make_rt(oc_timeout_ms=1500, retry_backoff_s=0.1)
    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    wait_until(
        lambda: any(a == 2 and sid is None for a, _, sid, _ in _apply_calls(rt, run_id)),
        15,
        "ApplyPatchST's attempt 2 to be claimed and preparing",
    )
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)  # what the worker's AbortCalls does right after
    worker.join(30)
    assert not worker.is_alive()

    assert outcome == ["superseded"]
    assert _prompts_titled(rt, f"kodo ApplyPatchST {run_id} #2") == 0, _apply_calls(rt, run_id)
    second = _apply_calls(rt, run_id)[1]
    assert second[1:] == ("failed", None, "StepAbandoned"), second
    with rt.sessions() as s:
        spent = s.execute(
            select(OpenCodeCall.spent_usd_micro, OpenCodeCall.spent_tokens).where(
                OpenCodeCall.run_id == run_id,
                OpenCodeCall.attempt == 2,
                OpenCodeCall.step_id == "ApplyPatchST",
            )
        ).one()
    assert tuple(spent) == (0, 0), "a call never sent spends nothing"
