"""Thin tasks: a run id in, the step's runner called, nothing else.

Names are stable (``kodo.CompileST``...) and args are ids only, so Flower and the
celery CLI show what runs without prompts or secrets.
"""

from __future__ import annotations

from celery import Task
from sqlalchemy.exc import OperationalError

from services.worker.cancel import abort_inflight_calls
from services.worker.celery_app import app
from services.worker.delivery import deliver
from services.worker.reconciler import reconcile
from services.worker.runtime import runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import StepBody, run_steps
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from services.worker.watcher import watch_approvals
from services.worker.webhooks import SEND_WEBHOOKS, send_after_commit, send_webhooks
from shared.config import Settings
from shared.domain.run_machine import RunStatus, StepId
from shared.queue import ABORT_CALLS, DELIVER, RECONCILE, WATCH_APPROVALS, task_name

BODIES: dict[StepId, StepBody] = {
    StepId.COMPILE: compile_step,
    StepId.APPLY_PATCH: apply_patch_step,
    StepId.DECIDE: decide_step,
    StepId.EXECUTE: execute_step,
}

_RETRY = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "acks_on_failure_or_timeout": True,  # a raised RunFailed is acked: never redelivered
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


class RunFailed(Exception):
    """The step recorded that its run failed; raised after the commit so Celery ends the
    task FAILURE (Flower counts it). It is acked like any failure (acks_on_failure_or_
    timeout), and is not in autoretry_for: the step is neither redelivered nor retried.
    ``throws`` makes Celery log it as expected, without a traceback."""


def _register(step: StepId) -> None:
    @app.task(name=task_name(step), bind=True, throws=(RunFailed,), **_RETRY)  # type: ignore[untyped-decorator]
    def step_task(self: Task, run_id: str) -> str:
        done = run_steps(runtime(app), step, run_id, BODIES, task_id=self.request.id)
        if done.status == RunStatus.FAILED.value:
            raise RunFailed(f"run {run_id} failed at {done.step.value} (recorded)")
        return done.status

    step_task.__doc__ = f"{step.value} for one run (id in, checkpointed, idempotent)."


for _step in StepId:
    _register(_step)


@app.task(name=WATCH_APPROVALS, **_RETRY)  # type: ignore[untyped-decorator]
def watch_approvals_task() -> int:
    """Safety net: dispatch approved runs the approve endpoint did not (beat, APPROVAL_POLL_S)."""
    return len(watch_approvals(runtime(app)))


@app.task(name=RECONCILE, **_RETRY)  # type: ignore[untyped-decorator]
def reconcile_task() -> int:
    """Re-dispatch steps that stopped progressing (beat every KODO_RECONCILE_S)."""
    return len(reconcile(runtime(app)))


@app.task(name=DELIVER, **_RETRY)  # type: ignore[untyped-decorator]
def deliver_task(run_id: str) -> int:
    """Push a succeeded run's branch to its repository's delivery remote."""
    return len(deliver(runtime(app), run_id))


# A run event's webhook delivery is sent as soon as the step that moved the run commits.
send_after_commit(app, Settings.from_env())


@app.task(name=SEND_WEBHOOKS, **_RETRY)  # type: ignore[untyped-decorator]
def send_webhooks_task(delivery_ids: list[str] | None = None) -> int:
    """Send due webhook deliveries (these ids, or every due one for the sweep)."""
    ids = tuple(delivery_ids) if delivery_ids is not None else None
    return len(send_webhooks(runtime(app), ids))


@app.task(name=ABORT_CALLS, **_RETRY)  # type: ignore[untyped-decorator]
def abort_calls_task(run_id: str) -> int:
    """Abort the in-flight provider calls of a run that was just cancelled."""
    return len(abort_inflight_calls(runtime(app), run_id))
