"""Driving the bare-Celery baseline: the same four steps, chained, no database.

submit->waiting is one ``compile`` task sent and its result awaited through the
backend; approve->done is the ``apply | decide | execute`` chain sent and its last
result awaited. Throughput sends every compile at once and, as each result arrives
(auto-approval), sends that run's chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from celery import Celery, chain
from celery.result import AsyncResult, ResultSet

TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BaselineLatency:
    submit_to_waiting_ms: list[float]
    approve_to_done_ms: list[float]


def _chain(app: Celery, run_id: str) -> AsyncResult:
    steps = chain(
        app.signature("baseline.apply", args=[run_id]),
        app.signature("baseline.decide"),
        app.signature("baseline.execute"),
    )
    result: AsyncResult = steps.apply_async()
    return result


def _compile(app: Celery, run_id: str) -> AsyncResult:
    result: AsyncResult = app.signature("baseline.compile", args=[run_id]).apply_async()
    return result


def latency(app: Celery, n: int) -> BaselineLatency:
    waits, dones = [], []
    for i in range(n):
        run_id = f"lat-{i}"
        began = time.perf_counter()
        _compile(app, run_id).get(timeout=TIMEOUT_S)
        waited = time.perf_counter()
        _chain(app, run_id).get(timeout=TIMEOUT_S)
        done = time.perf_counter()
        waits.append((waited - began) * 1000)
        dones.append((done - waited) * 1000)
    return BaselineLatency(waits, dones)


def throughput(app: Celery, n: int) -> float:
    """Runs per second with ``n`` runs in flight at once."""
    began = time.perf_counter()
    compiles = [_compile(app, f"thr-{i}") for i in range(n)]
    run_of = {r.id: f"thr-{i}" for i, r in enumerate(compiles)}
    chains = []
    for task_id, _meta in ResultSet(compiles).iter_native(timeout=TIMEOUT_S):
        chains.append(_chain(app, run_of[task_id]))
    ResultSet(chains).join_native(timeout=TIMEOUT_S)
    return n / (time.perf_counter() - began)
