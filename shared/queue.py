"""The Celery app factory both services use: the API only sends, the worker runs.

Redis is a transport that may lose messages; nothing waits on results, so the
result backend is off. Every task is acked late, in the worker's memory only: Redis
keeps no unacked copy to restore (``shared.redis_transport``); a lost message is
re-sent from Postgres by the reconciler.
"""

from __future__ import annotations

from celery import Celery

from shared import redis_transport
from shared.config import Settings
from shared.domain.run_machine import StepId
from shared.service.messages import AbortCalls, Deliver, Message, RunStep

QUEUE = "kodo"
# Beat's periodic passes get a queue of their own, so Flower and the broker show steps
# apart from them; every worker kodo starts consumes both (``-Q`` WORKER_QUEUES).
HOUSEKEEPING_QUEUE = "kodo.housekeeping"
WORKER_QUEUES = f"{QUEUE},{HOUSEKEEPING_QUEUE}"
WATCH_APPROVALS = "kodo.watch_approvals"
RECONCILE = "kodo.reconcile"
ABORT_CALLS = "kodo.abort_calls"
DELIVER = "kodo.deliver"


def task_name(step: StepId) -> str:
    """Stable, readable task names (``kodo.CompileST``) for Flower and the celery CLI."""
    return f"kodo.{step.value}"


# Tasks whose first argument is a run id (their log lines carry it as ``run_id``).
RUN_TASKS = frozenset({*(task_name(step) for step in StepId), DELIVER, ABORT_CALLS})


BROKER_SOCKET_TIMEOUT_S = 5.0
"""How long one Redis command (a publish, an ack) or connect may take on the broker's
connections. kombu's default is to wait forever: a broker that stops answering without
closing the connection (paused, failed over, a NAT or firewall that forgot the
connection) would hold every sender for good (beat's whole process, a collector's
wake-ups, a worker's thread after its commit, an API request) until the kernel gave up
retransmitting, some fifteen minutes, or forever for a paused server. A send that
times out is a lost message, which the watcher and the reconciler re-send from the
rows. Its consumers' BRPOP waits one second at a time, well within it."""


def make_celery(settings: Settings) -> Celery:
    redis_transport.install()  # redis:// reuses a client per channel (shared.redis_transport)
    app = Celery("kodo", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        # Declared, so every app (the API's, ``kodo db reset``'s purge) knows both.
        task_queues={q: {"exchange": q, "routing_key": q} for q in (QUEUE, HOUSEKEEPING_QUEUE)},
        task_routes={
            WATCH_APPROVALS: {"queue": HOUSEKEEPING_QUEUE},
            RECONCILE: {"queue": HOUSEKEEPING_QUEUE},
        },
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_keepalive": True,
        },
        worker_hijack_root_logger=False,
        beat_schedule={
            "watch-approvals": {"task": WATCH_APPROVALS, "schedule": settings.approval_poll_s},
            "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_s},
        },
    )
    return app


def send_run_task(app: Celery, name: str, run_id: str, parent: str | None = None) -> None:
    """Send one of a run's tasks as a link of the run's chain: its root id is the run id
    (the workflow id), its parent ``parent`` or else the task sending it, if a task sends
    it (Celery fills that in), so Flower shows a run's steps as one tree whoever sent each."""
    args = [run_id]
    app.send_task(
        name,
        args=args,
        queue=QUEUE,
        root_id=run_id,
        parent_id=parent,
        # What Flower shows as the task's arguments, as Celery's saferepr would write
        # it: a run id needs no truncation, and saferepr cost 3% of the collector's CPU.
        argsrepr=repr(args),
        kwargsrepr="{}",
        # No queue declaration per message: a direct queue is published to through the
        # anonymous exchange (an LPUSH onto its list), which needs none, and the workers
        # declare what they consume. kombu's check that it had declared it already copied
        # the queue and its exchange on every send (13% of a send's CPU, measured).
        declare=[],
        # Nothing reads a task's result (no result backend): without these, each send
        # made an AsyncResult, whose result backend and reply-to id Celery keeps per
        # thread, which under the API's gevent is per greenlet, so per request: a
        # backend object and an id made anew for every send there (a fifth of a send's
        # CPU in the API, py-spy). The reply-to is the app's own id, made once.
        ignore_result=True,
        reply_to=app.oid,
        result_cls=_Sent,
        add_to_parent=False,
    )


class _Sent:
    """What ``send_task`` returns here: the task's id only (see :func:`send_run_task`)."""

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.ignored = True


def send_step(app: Celery, step: StepId, run_id: str, parent: str | None = None) -> None:
    """Enqueue a step by name; call only after the transaction that chose it commits."""
    send_run_task(app, task_name(step), run_id, parent)


def send_abort_calls(app: Celery, run_id: str) -> None:
    """Ask a worker to abort the run's in-flight provider calls (after a cancel commits)."""
    send_run_task(app, ABORT_CALLS, run_id)


def send_deliver(app: Celery, run_id: str) -> None:
    """Ask a worker to push the run's branch (after its success commits)."""
    send_run_task(app, DELIVER, run_id)


class CelerySender:
    """The outbox's Celery adapter: each message becomes one task, by its stable name."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, message: Message) -> None:
        match message:
            case RunStep(step=step, run_id=run_id, parent=parent):
                send_step(self.app, step, run_id, parent)
            case AbortCalls(run_id=run_id):
                send_abort_calls(self.app, run_id)
            case Deliver(run_id=run_id):
                send_deliver(self.app, run_id)
