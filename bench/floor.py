"""What each kind of hop a run makes costs at its cheapest, measured in the same minutes.

A run makes so many Celery deliveries, Postgres transactions, API requests and
provider requests (the bench counts them). Each kind has a cheapest form here: a bare
Celery delivery of a stub task (the baseline phase), a transaction of one single-row
UPDATE, the cheapest authenticated request a run makes (``GET /runs/{id}/plan``, the
plan card an approver reads), a ``GET /session/status``. Today's counts times those unit
costs are what kodo's own CPU per run would be if every hop were as cheap as the
cheapest of its kind: the bench prints it beside the target, so the table says how much
of a gap fewer hops must close and how much cheaper hops can.

Measured while no run is in flight (after the latency runs), sequentially, in the
bench's own process: client CPU with ``time.thread_time``, servers' CPU from /proc.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import thread_time

import httpx
from sqlalchemy import text

from shared.db.engine import make_engine
from shared.opencode.client import OpenCodeClient

from .report import Row, at_most
from .stack import Bench
from .stats import cpu_ms

FLOOR_ROW = "  floor at today's hop counts: each x the cheapest of its kind"
ROUNDS = 300
WARMUP = 30


@dataclass(frozen=True)
class UnitCosts:
    """CPU milliseconds of the cheapest form of each hop."""

    pg_transaction_ms: float  # client + backend, one single-row UPDATE and COMMIT
    api_request_ms: float  # API process + Postgres, one GET /runs/{id}/plan
    provider_request_ms: float  # the client's side, one GET /session/status

    def as_dict(self) -> dict[str, float]:
        return {
            "pg_transaction_ms": round(self.pg_transaction_ms, 3),
            "api_request_ms": round(self.api_request_ms, 3),
            "provider_request_ms": round(self.provider_request_ms, 3),
        }


def _thread_ms() -> float:
    return thread_time() * 1000


def mean_cost_ms(once: Callable[[], object], spent_ms: Callable[[], float]) -> float:
    """``once`` run WARMUP times unmeasured, then ROUNDS times: what ``spent_ms`` (a
    running total of CPU milliseconds) grew by, per round."""
    for _ in range(WARMUP):
        once()
    before = spent_ms()
    for _ in range(ROUNDS):
        once()
    return (spent_ms() - before) / ROUNDS


def pg_transaction_ms(database_url: str) -> float:
    """One single-row UPDATE and its COMMIT through kodo's engine: the client's CPU and
    its backend's (the backend's pid read from Postgres itself, its CPU from /proc). The
    table is logged, so each commit writes and flushes WAL as kodo's do."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS bench_floor (id int PRIMARY KEY, n int)"))
            conn.execute(text("INSERT INTO bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING"))
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

        def once() -> None:
            with engine.begin() as conn:
                conn.execute(text("UPDATE bench_floor SET n = n + 1 WHERE id = 1"))

        cost = mean_cost_ms(once, lambda: _thread_ms() + cpu_ms(backend)[0])
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE bench_floor"))
    finally:
        engine.dispose()
    return cost


def api_request_ms(bench: Bench, server_cpu_ms: Callable[[], float], run_id: str) -> float:
    """One ``GET /runs/{id}/plan``, the plan card (authenticated, one read: the cheapest
    request a run makes): the servers' CPU (``server_cpu_ms``: the API processes' and
    Postgres's so far)."""
    headers = {"Authorization": f"Bearer {bench.token}"}
    with httpx.Client(base_url=bench.stack.api_url, headers=headers, timeout=30.0) as http:

        def once() -> None:
            reply = http.get(f"/runs/{run_id}/plan")
            if reply.status_code != 200:
                raise RuntimeError(f"plan of {run_id}: {reply.status_code} {reply.text[:200]}")

        return mean_cost_ms(once, server_cpu_ms)


def provider_request_ms(oc_url: str, directory: Path) -> float:
    """One ``GET /session/status`` through kodo's own client: the caller's CPU only
    (the daemon's is the provider's, not kodo's)."""
    with OpenCodeClient(oc_url, timeout_s=30.0) as client:
        return mean_cost_ms(lambda: client.busy_sessions(directory=str(directory)), _thread_ms)


def measure(bench: Bench, server_cpu_ms: Callable[[], float], run_id: str) -> UnitCosts:
    """Each unit cost in turn; ``run_id``: a finished run to read."""
    return UnitCosts(
        pg_transaction_ms=pg_transaction_ms(bench.database_url),
        api_request_ms=api_request_ms(bench, server_cpu_ms, run_id),
        provider_request_ms=provider_request_ms(bench.stack.oc_url, bench.repos[0]),
    )


def floor_rows(
    units: dict[str, float] | None,
    *,
    api_requests: float | None,
    deliveries: float | None,
    delivery_ms: float | None,
    transactions: float,
    provider_requests: float,
    limit_ms: float,
) -> list[Row]:
    """kodo's own CPU per run if every hop a run makes cost what the cheapest of its kind
    costs now (``units``: :meth:`UnitCosts.as_dict`), beside ``limit_ms``: lower needs
    fewer hops, or cheaper hops of every kind. No rows when a figure is missing."""
    if units is None or api_requests is None or deliveries is None or delivery_ms is None:
        return []
    pg, api, provider = (
        units["pg_transaction_ms"],
        units["api_request_ms"],
        units["provider_request_ms"],
    )
    parts = [
        (
            f"Celery: {deliveries:.2f} deliveries x {delivery_ms:.2f} ms (a bare one)",
            deliveries * delivery_ms,
        ),
        (
            f"Postgres: {transactions:.1f} transactions x {pg:.2f} ms (one UPDATE and COMMIT)",
            transactions * pg,
        ),
        (
            f"API: {api_requests:.1f} requests x {api:.2f} ms (GET /runs/{{id}}/plan)",
            api_requests * api,
        ),
        (
            f"provider HTTP: {provider_requests:.0f} requests x {provider:.2f} ms"
            " (the client's side)",
            provider_requests * provider,
        ),
    ]
    total = sum(ms for _, ms in parts)
    return [
        Row(FLOOR_ROW, total, target=f"<= {limit_ms:g}", met=at_most(total, limit_ms)),
        *(Row(f"    {label}", ms) for label, ms in parts),
    ]
