"""The worker's Celery app: ``celery -A services.worker.celery_app:app worker|beat``.

The app object is cheap and lazy (no connection at import); per-process resources
are built on first use after fork (see runtime.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import structlog
from celery import Task
from celery.beat import PersistentScheduler
from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)
from sqlalchemy import Engine, update
from sqlalchemy import func as sql_func
from sqlalchemy.exc import SQLAlchemyError

from services.worker.runtime import plan_pool_for, reset_runtime
from services.worker.sandbox.cgroup import sweep_orphans
from services.worker.steps.execute import announce_sandbox
from shared.config import Settings
from shared.db.engine import make_engine
from shared.db.models import WorkerProcess
from shared.logging import configure_logging
from shared.queue import RUN_TASKS, make_celery
from shared.service.processes import register_process

_settings = Settings.from_env()
app = make_celery(_settings)
app.conf.include = ["services.worker.tasks"]
app.conf.beat_scheduler = "services.worker.celery_app:StampingScheduler"

BEAT_STAMP_S = 5.0
"""How often beat stamps ``app.processes.last_seen_at`` (``kodo doctor`` reads its age)."""

log = structlog.get_logger("kodo.beat")
_beat_engine: Engine | None = None
_beat_lock = threading.Lock()


def stamp_beat() -> None:
    """Record that this beat process is ticking; a database outage is logged, not fatal
    (beat keeps sending, doctor reports the stamp's age)."""
    global _beat_engine
    with _beat_lock:
        if _beat_engine is None:
            _beat_engine = make_engine(_settings.database_url, pool_size=1)
        engine = _beat_engine
    try:
        with engine.begin() as conn:
            conn.execute(
                update(WorkerProcess)
                .where(
                    WorkerProcess.kind == "beat",
                    WorkerProcess.hostname == socket.gethostname(),
                    WorkerProcess.pid == os.getpid(),
                )
                .values(last_seen_at=sql_func.now())
            )
    except SQLAlchemyError as exc:
        log.warning("beat.stamp_failed", error=str(exc).splitlines()[0][:200])


class StampingScheduler(PersistentScheduler):  # type: ignore[misc]
    """Beat's own scheduler, which also stamps beat's row every BEAT_STAMP_S: liveness
    read from Postgres, since a beat that stopped ticking sends nothing to notice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stamped_at = float("-inf")

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now - self._stamped_at >= BEAT_STAMP_S:
            self._stamped_at = now
            stamp_beat()
        return min(interval, BEAT_STAMP_S)


@setup_logging.connect  # type: ignore[untyped-decorator]
def _structured_logs(loglevel: int | str | None = None, **_: object) -> None:
    """JSON log lines, or ``KODO_LOG_FORMAT=console`` ones (a receiver here also stops
    Celery configuring logging its own way)."""
    configure_logging(json=_settings.log_json, level=loglevel or "INFO")


_TASK_IDS = ("task_id", "task", "run_id")


@task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_ids(
    task_id: str | None = None,
    task: Task | None = None,
    args: tuple[object, ...] | None = None,
    **_: object,
) -> None:
    """Every line of a delivery, Celery's own failure and retry lines included, carries
    its task id and, for a run's task, the run id (steps add their step id)."""
    structlog.contextvars.unbind_contextvars(*_TASK_IDS)
    name = task.name if task is not None else None
    run_id = args[0] if name in RUN_TASKS and args and isinstance(args[0], str) else None
    ids = {"task_id": task_id, "task": name, "run_id": run_id}
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


@task_postrun.connect  # type: ignore[untyped-decorator]
def _unbind_task_ids(**_: object) -> None:
    """A thread's next delivery starts clean (the pool reuses threads)."""
    structlog.contextvars.unbind_contextvars(*_TASK_IDS)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_resources_after_fork(**_: object) -> None:
    reset_runtime()


def _register(kind: str) -> None:
    """Refuse to start against a database migrated to another head; record ourselves."""
    engine = make_engine(Settings.from_env().database_url, pool_size=1)
    try:
        register_process(engine, kind)
    finally:
        engine.dispose()


@worker_init.connect  # type: ignore[untyped-decorator]
def _check_schema_worker(sender: object = None, **_: object) -> None:
    _register("worker")
    announce_sandbox(Settings.from_env(), dict(os.environ))
    sweep_orphans()  # what a killed worker's commands left in this host's cgroups
    concurrency = getattr(sender, "concurrency", None)  # the WorkController's -c
    if isinstance(concurrency, int) and concurrency > 0:
        plan_pool_for(concurrency)


@beat_init.connect  # type: ignore[untyped-decorator]
def _check_schema_beat(**_: object) -> None:
    _register("beat")
