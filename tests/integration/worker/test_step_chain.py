"""A delivery sends the next step's provider call itself (run_steps), on real services.

When an outcome moves a run on to a step whose delivery only sends its provider call
and parks (OC_ASYNC), the delivery that recorded the outcome runs that first delivery
instead of sending a message for it: the same protocol (a lease from the rows, a fence,
a guarded record) without a Celery hop. The delivery the answer wakes is still the
step's own task, and a step that works in its delivery (ExecuteST) goes as its task.
Nothing is lost when the delivery cannot go on: the run waits at the next step's status
with no checkpoint (or a lapsed lease), which the reconciler sends from the rows, and a
step gone on to that finds the database away goes as a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from services.worker.collector import Collector
from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime
from services.worker.steps import base
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import Delivered, StepContext, StepOutcome, run_step, run_steps
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.clock import FixedClock
from shared.domain.run_machine import StepId
from shared.opencode.client import OpenCodeClient
from shared.service.messages import InMemorySender, RunStep
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    new_run,
    wait_lease_lapsed,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

BODIES = {
    StepId.COMPILE: compile_step,
    StepId.APPLY_PATCH: apply_patch_step,
    StepId.DECIDE: decide_step,
    StepId.EXECUTE: execute_step,
}


def _queued(rt: Runtime) -> list[str]:
    raw = redis.Redis.from_url(rt.settings.redis_url).lrange("kodo", 0, -1)
    return [json.loads(m)["headers"]["task"] for m in raw]


def _steps(rt: Runtime, run_id: str) -> dict[str, tuple[str, int, str | None]]:
    """Each checkpoint of the run: (status, deliveries, the task that entered it last)."""
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT step_id, status, deliveries, task_id FROM app.step_runs WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        return {r.step_id: (r.status, r.deliveries, r.task_id) for r in rows}


def _approved_run(rt: Runtime, repo: Path) -> str:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    redis.Redis.from_url(rt.settings.redis_url).delete("kodo")
    return run_id


class Answers:
    """Waits for a parked step's turn to end, as the collector sees it (its wake-up
    kept in memory: the test delivers the step itself)."""

    def __init__(self, rt: Runtime) -> None:
        self.client = OpenCodeClient(rt.settings.oc_base_url, timeout_s=10)
        self.collector = Collector(
            self.client, rt.sessions, InMemorySender(), daemon=self.client.base_url
        )

    def arrived(self, step: StepId, run_id: str) -> None:
        """Until the collector would wake ``step`` of ``run_id`` (other runs' parked
        steps, their answers in too, may be woken beside it)."""
        wait_until(
            lambda: RunStep(step, run_id) in self.collector.reconcile(),
            10,
            f"{step}'s turn to end",
        )


@pytest.fixture
def answers(async_rt: Runtime) -> Iterator[Answers]:
    waiter = Answers(async_rt)
    yield waiter
    waiter.client.close()


def _patch_answered(rt: Runtime, repo: Path, answers: Answers) -> str:
    """A run whose ApplyPatchST sent its call and parked, the answer now in."""
    run_id = new_run(rt, repo)
    assert run_steps(rt, StepId.COMPILE, run_id, BODIES) == Delivered(StepId.COMPILE, "parked")
    answers.arrived(StepId.COMPILE, run_id)
    done = run_steps(rt, StepId.COMPILE, run_id, BODIES)
    assert done == Delivered(StepId.COMPILE, "waiting_input"), "an approval is no step"
    approve(rt, run_id)
    redis.Redis.from_url(rt.settings.redis_url).delete("kodo")
    done = run_steps(rt, StepId.APPLY_PATCH, run_id, BODIES)
    assert done == Delivered(StepId.APPLY_PATCH, "parked")
    answers.arrived(StepId.APPLY_PATCH, run_id)
    return run_id


def test_the_delivery_that_records_the_patch_sends_decides_call_itself(
    async_rt: Runtime, answers: Answers, repo: Path
) -> None:
    rt = async_rt
    run_id = _patch_answered(rt, repo, answers)
    done = run_steps(rt, StepId.APPLY_PATCH, run_id, BODIES, task_id="wake-1")
    assert done == Delivered(StepId.DECIDE, "parked"), "the patch recorded, decide's call sent"
    assert _queued(rt) == [], "no message: this delivery ran DecideST's first delivery"
    assert _steps(rt, run_id)["DecideST"] == ("running", 1, "wake-1")

    answers.arrived(StepId.DECIDE, run_id)
    done = run_steps(rt, StepId.DECIDE, run_id, BODIES, task_id="wake-2")
    assert done == Delivered(StepId.DECIDE, "executing")
    assert _queued(rt) == ["kodo.ExecuteST"], "the verification runs as its own task"
    assert "ExecuteST" not in _steps(rt, run_id)


def test_with_blocking_calls_every_step_goes_as_its_own_task(rt: Runtime, repo: Path) -> None:
    run_id = _approved_run(rt, repo)
    done = run_steps(rt, StepId.APPLY_PATCH, run_id, BODIES)
    assert done == Delivered(StepId.APPLY_PATCH, "deciding")
    assert _queued(rt) == ["kodo.DecideST"]
    assert "DecideST" not in _steps(rt, run_id)


def test_run_step_alone_records_and_sends_the_next_step(
    async_rt: Runtime, answers: Answers, repo: Path
) -> None:
    run_id = _patch_answered(async_rt, repo, answers)
    assert run_step(async_rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert _queued(async_rt) == ["kodo.DecideST"]


class Killed(BaseException):
    """The worker process dying (SIGKILL)."""


def _killed(ctx: StepContext) -> StepOutcome:
    raise Killed


def test_a_worker_that_dies_between_two_steps_leaves_the_next_to_the_reconciler(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(clock=clock, oc_async=True, redispatch_after_s=30, step_lease_s=0.2)
    answers = Answers(rt)
    try:
        between = _patch_answered(rt, repo, answers)
        inside = _patch_answered(rt, repo, answers)
    finally:
        answers.client.close()
    entering = base.load_context

    def killed_entering(
        rt: Runtime, run_id: str, step: StepId, task_id: str | None = None
    ) -> StepContext | None:
        if step is StepId.DECIDE:
            raise Killed  # after the patch's record committed, before decide's lease
        return entering(rt, run_id, step, task_id)

    with monkeypatch.context() as patched:
        patched.setattr(base, "load_context", killed_entering)
        with pytest.raises(Killed):
            run_steps(rt, StepId.APPLY_PATCH, between, BODIES)
    with pytest.raises(Killed):  # dies inside decide's body: its lease taken
        run_steps(rt, StepId.APPLY_PATCH, inside, {**BODIES, StepId.DECIDE: _killed})
    assert _queued(rt) == [], "neither delivery sent decide"
    assert _steps(rt, between)["ApplyPatchST"][0] == "succeeded"
    assert "DecideST" not in _steps(rt, between), "no checkpoint: never entered"
    assert _steps(rt, inside)["DecideST"][0] == "running"

    wait_lease_lapsed(rt, inside, StepId.DECIDE)
    clock.advance(31)
    redone = {(r.run_id, r.step) for r in reconcile(rt)}
    assert redone == {(between, StepId.DECIDE), (inside, StepId.DECIDE)}
    assert _queued(rt) == ["kodo.DecideST", "kodo.DecideST"]


def _database_away(ctx: StepContext) -> StepOutcome:
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_a_step_gone_on_to_that_finds_the_database_away_is_sent_as_its_own_task(
    async_rt: Runtime, answers: Answers, repo: Path
) -> None:
    run_id = _patch_answered(async_rt, repo, answers)
    bodies = {**BODIES, StepId.DECIDE: _database_away}
    done = run_steps(async_rt, StepId.APPLY_PATCH, run_id, bodies)
    assert done == Delivered(StepId.DECIDE, "sent")
    assert _queued(async_rt) == ["kodo.DecideST"], "its own delivery takes it up (or the sweep)"
    assert _steps(async_rt, run_id)["ApplyPatchST"][0] == "succeeded"


def test_the_delivery_own_step_finding_the_database_away_raises_for_celery_to_retry(
    rt: Runtime, repo: Path
) -> None:
    run_id = _approved_run(rt, repo)
    with pytest.raises(OperationalError):
        run_steps(rt, StepId.APPLY_PATCH, run_id, {**BODIES, StepId.APPLY_PATCH: _database_away})
    assert _queued(rt) == []
