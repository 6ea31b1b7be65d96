"""The bare-Celery baseline: kodo's four steps as no-op tasks, chained, no database.

Redis is the broker *and* the result backend (the reference setup: no durability,
results waited on through the backend). ``bench.baseline_worker`` is the entry point.
"""

from __future__ import annotations

from celery import Celery

QUEUE = "baseline"
STEPS = ("compile", "apply", "decide", "execute")


def make_app(redis_url: str) -> Celery:
    app = Celery("kodo-baseline", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )
    for step in STEPS:
        _register(app, step)
    return app


def _register(app: Celery, step: str) -> None:
    @app.task(name=f"baseline.{step}")  # type: ignore[untyped-decorator]
    def noop(run_id: str) -> str:
        return run_id
