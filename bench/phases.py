"""The benchmark's phases, each returning plain figures (milliseconds, counts)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from redis import Redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings

from . import baseline_phase, floor, sqlcount
from .baseline_app import make_app
from .calls import measure_calls
from .kodo_phase import Driver, Timing, finished_steps, step_times
from .stack import Bench, start_workers, stop_workers
from .stats import (
    cpu_ms,
    descendants,
    machine_cpu_ms,
    peak_rss_mb,
    percentile,
    thread_cpu_ms,
    tree_cpu_ms,
)

WARMUP_RUNS = 3


def redis_commands(client: Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter(
        {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if "calls" in v}
    )


def p(values: list[float], q: float) -> float | None:
    return percentile(values, q)


def celery_pids(bench: Bench) -> list[int]:
    """The workers' celery processes (a prefork pool's children too; git and test
    subprocesses excluded)."""
    return [
        pid
        for proc in bench.workers
        for pid in descendants(proc.popen.pid)
        if b"celery" in cmdline(pid)
    ]


def worker_rss(bench: Bench) -> tuple[float, float]:
    """Peak RSS of the celery processes (git and test subprocesses excluded)."""
    return peak_rss_mb(celery_pids(bench))


def worker_threads_ms(bench: Bench) -> Counter[str]:
    """CPU ms so far of the workers' Celery processes by thread kind (see
    :func:`bench.stats.thread_cpu_ms`): with the threads pool, each worker's main thread
    runs Celery's event loop (receiving, acking, dispatching) and the others run the
    steps. Read from /proc per thread, not sampled: a GIL-sampling profiler charges a
    thread for the time it holds the GIL while the OS has it preempted, which on a busy
    2-core machine inflated the event loop from about a tenth of a worker's CPU to 40%."""
    used: Counter[str] = Counter()
    for pid in celery_pids(bench):
        used.update(thread_cpu_ms(pid))
    return used


def _workers_cpu_ms(bench: Bench) -> float:
    """CPU milliseconds so far of the bench's current workers and their children."""
    return sum(tree_cpu_ms(proc.popen.pid) for proc in bench.workers)


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


SUBPROCESS_ROLES = ("kodo_worker", "api")
WORK_ROLES = ("kodo_worker subprocesses", "api subprocesses", "oc-compat")
"""Roles whose CPU is the run's own work (git, tests, the stub provider)."""


def work_cpu(cpu: Mapping[str, float], roles: tuple[str, ...] = WORK_ROLES) -> float:
    """The run's own work in ``cpu`` (by role): what no orchestration can go under."""
    return sum(cpu.get(role, 0.0) for role in roles)


def cpu_by_role(bench: Bench, sessions: sessionmaker[Session]) -> defaultdict[str, float]:
    """CPU milliseconds so far of each kind of process, Postgres backends included.

    Backends are those alive now: one that ended meanwhile (a connection a pool closed)
    takes its CPU with it, so the bench also prints connections opened per run.
    """
    used: defaultdict[str, float] = defaultdict(float)
    for proc in bench.stack.procs:
        role = proc.name.rsplit("-", 1)[0] if proc.name[-1].isdigit() else proc.name
        for pid in descendants(proc.popen.pid):
            own, children = cpu_ms(pid)
            used[role] += own
            # git and test processes a worker ran, and the git processes with which the
            # API pins a submitted repository: the run's own work, not kodo's
            if children and role in SUBPROCESS_ROLES:
                used[f"{role} subprocesses"] += children
            else:
                used[role] += children
    with sessions() as s:
        pids = s.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        used["postgres"] += sum(sum(cpu_ms(int(pid))) for pid in pids)
    return used


@dataclass
class Counts:
    """SQL (per role), Redis command and provider request totals at one moment."""

    sql: dict[str, Counter[str]]
    redis: Counter[str]
    provider: Counter[str]  # oc-compat's requests by route ("POST /session", ...)

    @classmethod
    def take(cls, bench: Bench) -> Counts:
        time.sleep(sqlcount.FLUSH_S * 2.5)  # let every process publish its latest totals
        return cls(
            sql={r: sqlcount.collect(bench.sql_dir, r) for r in ("worker", "api")},
            redis=redis_commands(bench.redis()),
            provider=Counter(bench.oc("GET", "/__kodo/stats")["by_route"]),
        )

    def per_run(self, later: Counts, runs: int) -> dict[str, Any]:
        def delta(a: Counter[str], b: Counter[str]) -> dict[str, float]:
            keys = sorted(set(a) | set(b))
            return {k: round((b[k] - a[k]) / runs, 2) for k in keys if b[k] != a[k]}

        return {
            "sql": {r: delta(self.sql[r], later.sql[r]) for r in self.sql},
            "redis": delta(self.redis, later.redis),
            "provider": delta(self.provider, later.provider),
        }


@dataclass
class Phase:
    """Figures of one worker count."""

    workers: int
    figures: dict[str, Any] = field(default_factory=dict)


_baseline_apps: dict[str, Celery] = {}  # one per process: task names are registered once


def baseline(bench: Bench, workers: int, runs: int, latency_runs: int, pool: str) -> Phase:
    phase = Phase(workers)
    app_path = "bench.baseline_worker:app"
    start_workers(bench, app=app_path, queue="baseline", count=workers, pool=pool)
    if bench.baseline_redis_url not in _baseline_apps:
        _baseline_apps[bench.baseline_redis_url] = make_app(bench.baseline_redis_url)
    app = _baseline_apps[bench.baseline_redis_url]
    try:
        baseline_phase.latency(app, WARMUP_RUNS)
        lat = baseline_phase.latency(app, latency_runs)
        client = Redis.from_url(bench.baseline_redis_url)
        before = redis_commands(client)
        cpu_before = _workers_cpu_ms(bench)
        phase.figures["runs_per_s"] = baseline_phase.throughput(app, runs)
        # The same Celery workers' CPU for each run's four tasks (their results included):
        # what a delivery costs with no step work at all.
        phase.figures["cpu_ms_per_run"] = {
            "workers": round((_workers_cpu_ms(bench) - cpu_before) / runs, 2)
        }
        after = redis_commands(client)
        phase.figures["redis_per_run"] = round(
            sum(after.values()) / runs - sum(before.values()) / runs, 1
        )
        phase.figures["submit_to_waiting_ms"] = lat.submit_to_waiting_ms
        phase.figures["approve_to_done_ms"] = lat.approve_to_done_ms
        phase.figures["rss_mb"] = worker_rss(bench)
    finally:
        stop_workers(bench)
    return phase


def _describe(exc: BaseException) -> str:
    """The error and, for an HTTP error, the request it broke."""
    request = getattr(exc, "_request", None)
    where = f" on {request.method} {request.url.path}" if request is not None else ""
    return f"{exc!r}{where}"


def split_ok(results: Sequence[Timing | BaseException]) -> tuple[list[Timing], list[str]]:
    good = [r for r in results if isinstance(r, Timing) and r.status == "succeeded"]
    bad = [
        _describe(r) if isinstance(r, BaseException) else f"{r.run_id}: {r.status}"
        for r in results
        if not (isinstance(r, Timing) and r.status == "succeeded")
    ]
    return good, bad


def kodo(
    bench: Bench,
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    workers: int,
    runs: int,
    latency_runs: int,
    beat_runs: int,
    pool: str,
    full: bool,
    deadline_s: float,
) -> Phase:
    """Latency, the beat-only path and the provider-call figures (``full``), then throughput."""
    phase = Phase(workers)
    start_workers(bench, app="bench.kodo_worker:app", queue="kodo", count=workers, pool=pool)
    try:
        asyncio.run(
            _kodo(bench, sessions, settings, phase, runs, latency_runs, beat_runs, full, deadline_s)
        )
        phase.figures["rss_mb"] = worker_rss(bench)
    finally:
        stop_workers(bench)
    return phase


async def _kodo(
    bench: Bench,
    sessions: sessionmaker[Session],
    settings: Settings,
    phase: Phase,
    runs: int,
    latency_runs: int,
    beat_runs: int,
    full: bool,
    deadline_s: float,
) -> None:
    driver = Driver(
        bench.stack.api_url,
        bench.repos,
        runs=runs,
        sessions=sessions,
        token=bench.token,
    )
    failures: list[str] = []
    try:
        await driver.sequential(WARMUP_RUNS)
        if full:
            before = Counts.take(bench)
            requests_before = driver.requests
            timed, bad = split_ok(list(await driver.sequential(latency_runs)))
            failures += bad
            phase.figures["latency_counts_per_run"] = before.per_run(
                Counts.take(bench), max(1, len(timed))
            )
            phase.figures["api_requests_per_run"] = (driver.requests - requests_before) / max(
                1, len(timed)
            )
            steps = step_times(sessions, [t.run_id for t in timed])
            phase.figures["latency"] = _latency_figures(timed, steps.body_ms, steps.work_ms)
            phase.figures["approve_to_apply_started_db_ms"] = list(steps.apply_started_ms.values())
            phase.figures["approve_to_dispatched_db_ms"] = list(steps.dispatched_ms.values())
            beat, bad = split_ok(await driver.many(beat_runs, approver="silent"))
            failures += bad
            phase.figures["beat_approve_to_applying_ms"] = [
                t.approve_to_applying_ms for t in beat if t.approve_to_applying_ms is not None
            ]
            calls = await asyncio.to_thread(
                measure_calls, settings, timed[0].run_id, bench.repos[0]
            )
            phase.figures["calls"] = {
                "raw_ms": calls.raw_ms,
                "wrapped_ms": calls.wrapped_ms,
                "overhead_ms": calls.overhead_ms,
                "l1_us": calls.l1_us,
                "l2_ms": calls.l2_ms,
            }

            def api_and_postgres_ms() -> float:
                used = cpu_by_role(bench, sessions)
                return used["api"] + used["postgres"]

            units = await asyncio.to_thread(
                floor.measure, bench, api_and_postgres_ms, timed[0].run_id
            )
            phase.figures["unit_costs"] = units.as_dict()
        before = Counts.take(bench)
        cpu_before = cpu_by_role(bench, sessions)
        threads_before = worker_threads_ms(bench)
        machine_before = machine_cpu_ms()
        steps_before = finished_steps(sessions)
        results, elapsed = await driver.many_within(runs, deadline_s)
        done, bad = split_ok(results)
        failures += [b for b in bad if "deadline" not in b]
        machine_ms = machine_cpu_ms() - machine_before
        cpu_after = cpu_by_role(bench, sessions)
        threads_after = worker_threads_ms(bench)
        # Four steps make a run: runs the deadline cut short count for the steps they did.
        equivalents = max(1.0, (finished_steps(sessions) - steps_before) / 4)
        phase.figures["runs_per_s"] = len(done) / elapsed
        phase.figures["run_equivalents_per_s"] = equivalents / elapsed
        phase.figures["in_flight"] = runs
        phase.figures["completed"] = len(done)
        phase.figures["unfinished_at_deadline"] = runs - len(done)
        phase.figures["cpu_ms_per_run"] = {
            role: round((cpu_after[role] - cpu_before[role]) / equivalents, 1)
            for role in sorted(cpu_after)
        }
        phase.figures["worker_threads_ms_per_run"] = {
            kind: round((threads_after[kind] - threads_before[kind]) / equivalents, 1)
            for kind in sorted(threads_after)
        }
        phase.figures["machine_cpu_ms_per_run"] = round(machine_ms / equivalents, 1)
        phase.figures["throughput_counts_per_run"] = before.per_run(
            Counts.take(bench), round(equivalents)
        )
        phase.figures["throughput_latency"] = _latency_figures(done, {}, {})
    finally:
        phase.figures["failures"] = failures
        phase.figures["connection_resets_retried"] = driver.resets
        await driver.close()


def _latency_figures(
    timed: list[Timing],
    body_ms: dict[str, dict[str, float]],
    work_ms: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Per timed run; ``*_work_ms`` is the time its steps spent in git and the verification
    command (recorded by the steps), which the reference systems' stub steps do not do."""
    # Only complete runs, so the lists stay aligned run by run (medians of differences).
    runs = [
        t for t in timed if t.submit_to_waiting_ms is not None and t.approve_to_done_ms is not None
    ]

    def compile_of(table: dict[str, dict[str, float]], t: Timing) -> float:
        return table.get(t.run_id, {}).get("CompileST", 0.0)

    def after_of(table: dict[str, dict[str, float]], t: Timing) -> float:
        return sum(v for k, v in table.get(t.run_id, {}).items() if k != "CompileST")

    return {
        "submit_to_waiting_ms": [t.submit_to_waiting_ms for t in runs],
        "submit_request_ms": [t.submit_request_ms for t in runs if t.submit_request_ms is not None],
        "approve_to_done_ms": [t.approve_to_done_ms for t in runs],
        "approve_to_applying_ms": [
            t.approve_to_applying_ms for t in runs if t.approve_to_applying_ms is not None
        ],
        "compile_step_ms": [compile_of(body_ms, t) for t in runs],
        "apply_decide_execute_steps_ms": [after_of(body_ms, t) for t in runs],
        "compile_work_ms": [compile_of(work_ms, t) for t in runs],
        "after_approval_work_ms": [after_of(work_ms, t) for t in runs],
    }
