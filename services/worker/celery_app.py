"""The worker's Celery app: ``celery -A services.worker.celery_app:app worker|beat``.

The app object is cheap and lazy (no connection at import); per-process resources
are built on first use after fork (see runtime.py).
"""

from __future__ import annotations

from celery.signals import worker_process_init

from services.worker.runtime import reset_runtime
from shared.config import Settings
from shared.queue import make_celery

app = make_celery(Settings.from_env())
app.conf.include = ["services.worker.tasks"]


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_resources_after_fork(**_: object) -> None:
    reset_runtime()
