"""The Celery app factory both services use: the API only sends, the worker runs.

Redis is a transport that may lose messages; nothing waits on results, so the
result backend is off and every task is acked late.
"""

from __future__ import annotations

from celery import Celery

from shared.config import Settings
from shared.domain.run_machine import StepId
from shared.service.messages import AbortCalls, Deliver, Message, RunStep

QUEUE = "kodo"
WATCH_APPROVALS = "kodo.watch_approvals"
RECONCILE = "kodo.reconcile"
ABORT_CALLS = "kodo.abort_calls"
DELIVER = "kodo.deliver"


def task_name(step: StepId) -> str:
    """Stable, readable task names (``kodo.CompileST``) for Flower and the celery CLI."""
    return f"kodo.{step.value}"


# Tasks whose first argument is a run id (their log lines carry it as ``run_id``).
RUN_TASKS = frozenset({*(task_name(step) for step in StepId), DELIVER, ABORT_CALLS})


def make_celery(settings: Settings) -> Celery:
    app = Celery("kodo", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 1800},
        worker_hijack_root_logger=False,
        beat_schedule={
            "watch-approvals": {"task": WATCH_APPROVALS, "schedule": settings.approval_poll_s},
            "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_s},
        },
    )
    return app


def send_step(app: Celery, step: StepId, run_id: str) -> None:
    """Enqueue a step by name; call only after the transaction that chose it commits."""
    app.send_task(task_name(step), args=[run_id], queue=QUEUE)


def send_abort_calls(app: Celery, run_id: str) -> None:
    """Ask a worker to abort the run's in-flight provider calls (after a cancel commits)."""
    app.send_task(ABORT_CALLS, args=[run_id], queue=QUEUE)


def send_deliver(app: Celery, run_id: str) -> None:
    """Ask a worker to push the run's branch (after its success commits)."""
    app.send_task(DELIVER, args=[run_id], queue=QUEUE)


class CelerySender:
    """The outbox's Celery adapter: each message becomes one task, by its stable name."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, message: Message) -> None:
        match message:
            case RunStep(step=step, run_id=run_id):
                send_step(self.app, step, run_id)
            case AbortCalls(run_id=run_id):
                send_abort_calls(self.app, run_id)
            case Deliver(run_id=run_id):
                send_deliver(self.app, run_id)
