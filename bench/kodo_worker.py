"""The kodo worker with SQL counting: ``celery -A bench.kodo_worker:app worker``.

Identical to ``services.worker.celery_app:app``; only the counters are added, before
any engine exists, in the worker process (solo pool) or in each forked child.
"""

from __future__ import annotations

from celery.signals import worker_process_init

from bench import fn_cpu, sqlcount
from services.worker.celery_app import app

sqlcount.install_from_env("worker")
fn_cpu.install_from_env("worker")


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _count_in_child(**_: object) -> None:
    sqlcount.install_from_env("worker")
    fn_cpu.install_from_env("worker")


__all__ = ["app"]
