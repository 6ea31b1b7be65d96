"""The think-time phase: N runs at once, every provider call held T ms by oc-compat.

It measures what issue 11 asks of async provider calls: with the default ``kodo up``
shape (one worker process of 4 threads, beat, collector, API, oc-compat), are the
runs' calls in flight together (the peak oc-compat saw), and how close is the wall
time to the ideal? The ideal is the three held calls of a run back to back (3T) plus
the CPU floor: the CPU the phase's runs spent on their own work (git and the
verification command in the worker's subprocesses, and the stub provider, oc-compat)
divided by the machine's cores, which no orchestration can go under, since that work
sits between a run's calls. kodo's own CPU (API, worker, beat, collector, Postgres,
Redis) is not in the ideal: it is what the efficiency shows the cost of.

Peak RSS is each kodo process's own high-water mark over the phase (reset at its start
through ``/proc/PID/clear_refs``), git and test subprocesses excluded.

With ``--opencode real`` the provider is N real daemons driving the scripted LLM
(bench/real_daemons.py): their CPU and the LLM's are the provider's share of the floor.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import WORKER_CONCURRENCY

from .kodo_phase import GOAL, Driver, SubmitError, Timing
from .phases import WARMUP_RUNS, cmdline, cpu_by_role, split_ok, work_cpu
from .phases import WORK_ROLES as BASE_WORK_ROLES
from .real_daemons import DAEMON_ROLE, LLM_ROLE, RealDaemons
from .report import Row, at_least, at_most, none_row
from .stack import Bench, start_workers, stop_workers
from .stats import (
    BusySampler,
    descendants,
    machine_cpu_ms,
    percentile,
    reset_peak_rss,
    vm_hwm_kb,
)

CALLS_PER_RUN = 3  # CompileST, ApplyPatchST, DecideST: each holds T ms
WORK_ROLES = (*BASE_WORK_ROLES, LLM_ROLE)
"""CPU that is the run's own work (git, verification, the stub provider: oc-compat or
the scripted LLM), as in the base phase's "if git, tests and provider were the only
cost" row. Real daemons' CPU (DAEMON_ROLE) is spent inside the held calls, not between
them: it bounds the wall on its own (all work CPU / cores), never adds to 3T."""

BUSY_SHARE = 0.9
"""A second this busy (all cores) counts as CPU-bound in the think table."""
UNACCOUNTED = "sandboxed commands, their PID namespace's init reaped by the host's; kernel threads"
"""What the machine spent that no kodo process or its reaped children show
(stats.machine_cpu_ms)."""

KODO_ROLES = ("api", "worker", "beat", "collector", "oc-compat")
REAL_KODO_ROLES = KODO_ROLES[:-1]  # against real daemons, no oc-compat runs
RSS_BUDGET_MB = 1024.0  # all kodo processes together, oc-compat excluded (issue 11)
WALL_FACTOR = 1.5  # target: wall <= 1.5 x 3T (90 s for 3 x 20 s)
PEAK_SHARE = 0.9  # target: >= 900 of 1,000 runs' calls in flight at once


_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def failure_kind(failure: str) -> str:
    """A failure without its run id, cut short: what many runs failed of, counted once."""
    return _IDS.sub("<id>", failure)[:160]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def kodo_pids(bench: Bench, roles: tuple[str, ...] = KODO_ROLES) -> dict[str, list[int]]:
    """Each kodo role's processes: the API's gunicorn master and workers, the worker's
    celery process (its git and test children excluded), beat, collector, oc-compat."""
    found: dict[str, list[int]] = {role: [] for role in roles}
    for proc in bench.stack.procs:
        if not proc.alive():
            continue
        role = "worker" if proc.name.startswith("kodo_worker") else proc.name
        if role not in found:
            continue
        pids = descendants(proc.pid)
        if role == "worker":
            pids = [pid for pid in pids if b"celery" in cmdline(pid)]
        found[role] += pids
    missing = [role for role, pids in found.items() if not pids]
    if missing:
        raise RuntimeError(f"no running process for {missing}: the stack is not the kodo up shape")
    return found


@dataclass(frozen=True)
class ThinkResult:
    timings: list[Timing | BaseException]
    wall_s: float
    submitted_within_s: float | None
    retried: dict[str, int]  # requests sent again after a 503/429 with Retry-After, by kind


async def _warm(bench: Bench, sessions: sessionmaker[Session]) -> None:
    """A few runs without think time: the new worker's imports, pools and caches."""
    warm = Driver(bench.stack.api_url, bench.repos, runs=1, sessions=sessions, token=bench.token)
    try:
        _, bad = split_ok(await warm.sequential(WARMUP_RUNS))
    finally:
        await warm.close()
    if bad:
        raise RuntimeError(f"warm-up runs failed: {bad}")


async def _drive(
    bench: Bench,
    sessions: sessionmaker[Session],
    runs: int,
    think_ms: int,
    deadline_s: float,
    submit_limit: int,
) -> ThinkResult:
    driver = Driver(
        bench.stack.api_url,
        bench.repos,
        runs=runs,
        sessions=sessions,
        token=bench.token,
        goal=f"{GOAL} [oc:slow={think_ms}]",
        submit_limit=submit_limit,
    )
    try:
        began = time.perf_counter()
        results, elapsed = await driver.many_within(runs, deadline_s)
    finally:
        await driver.close()
    # When the API had accepted the last run (its answer came back), not when the last
    # request left: all of them leave at once.
    last_submit = max(
        (t.accepted for t in results if isinstance(t, Timing) and t.accepted is not None),
        default=None,
    )
    return ThinkResult(
        results,
        elapsed,
        None if last_submit is None else last_submit - began,
        dict(driver.retried.most_common()),
    )


def think(
    bench: Bench,
    sessions: sessionmaker[Session],
    *,
    runs: int,
    think_ms: int,
    deadline_s: float,
    submit_limit: int = 0,
    real: RealDaemons | None = None,
) -> dict[str, Any]:
    """Run the phase on the worker ``kodo up`` starts (one process, its default number
    of threads); its figures (ms, MB, counts).

    ``submit_limit``: at most this many runs being submitted at once (0: all at once,
    as the issue asks; a bound shows the rest of the path when the API's intake is
    what fails). ``real``: the daemons the stack points at instead of oc-compat."""
    start_workers(
        bench,
        app="bench.kodo_worker:app",
        queue="kodo",
        count=1,
        pool="threads",
        threads=WORKER_CONCURRENCY,
    )
    try:
        asyncio.run(_warm(bench, sessions))
        pids = kodo_pids(bench, KODO_ROLES if real is None else REAL_KODO_ROLES)
        reset = all(reset_peak_rss(pid) for group in pids.values() for pid in group)
        if real is None:
            bench.oc("POST", "/__kodo/reset")
        else:
            daemons_before = real.begin(sessions)
        cpu_before = cpu_by_role(bench, sessions)
        machine_before = machine_cpu_ms()
        opened_before, alive_before = postgres_sessions(sessions)
        with BusySampler() as busy:
            result = asyncio.run(_drive(bench, sessions, runs, think_ms, deadline_s, submit_limit))
        machine_ms = machine_cpu_ms() - machine_before
        opened_after, alive_after = postgres_sessions(sessions)
        ended = (opened_after - opened_before) - (alive_after - alive_before)
        cpu_after = cpu_by_role(bench, sessions)
        if real is None:
            oc_stats = bench.oc("GET", "/__kodo/stats")
            provider: dict[str, Any] = {"provider": "compat"}
        else:
            daemons = real.end(sessions, daemons_before)
            oc_stats = {
                "in_flight_peak": daemons["scripted_llm"]["held_peak"],
                "prompts": daemons["prompts"],
            }
            provider = {"provider": "real", **daemons}
            cpu_after[DAEMON_ROLE] = sum(d["cpu_ms"] for d in daemons["daemons"])
        # Processes that restarted mid-phase (a gunicorn worker) count with their peak too.
        rss = {role: sum(vm_hwm_kb(p) for p in group) / 1024 for role, group in pids.items()}
    finally:
        stop_workers(bench)
    done, failures = split_ok(result.timings)
    failures.sort(key=lambda f: f.startswith("SubmitError"))  # the rarer kinds first
    cpu = {role: cpu_after[role] - cpu_before[role] for role in sorted(cpu_after)}
    work_ms = work_cpu(cpu, WORK_ROLES)
    return {
        "runs": runs,
        "think_ms": think_ms,
        "cores": cores(),
        "wall_s": result.wall_s,
        "submitted_within_s": result.submitted_within_s,
        "succeeded": len(done),
        "failed": runs - len(done),
        "not_submitted": sum(isinstance(t, SubmitError) for t in result.timings),
        "retried": result.retried,
        "submit_limit": submit_limit,
        "failures": failures[:20],
        "failure_kinds": dict(Counter(failure_kind(f) for f in failures).most_common(10)),
        "peak_in_flight": oc_stats["in_flight_peak"],
        "provider_calls": oc_stats["prompts"],
        "cpu_ms": {role: round(ms, 1) for role, ms in cpu.items()},
        "work_cpu_ms": work_ms,
        "machine_cpu_ms": round(machine_ms, 1),
        "postgres_backends_ended": ended,
        "busy_seconds_share": busy.share_at_least(BUSY_SHARE),
        "peak_rss_mb": {role: round(mb, 1) for role, mb in rss.items()},
        "peak_rss_reset": reset,
        **provider,
        "submit_to_waiting_p50_ms": percentile(
            [t.submit_to_waiting_ms for t in done if t.submit_to_waiting_ms is not None], 50
        ),
        "approve_to_done_p50_ms": percentile(
            [t.approve_to_done_ms for t in done if t.approve_to_done_ms is not None], 50
        ),
    }


def postgres_sessions(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Sessions Postgres has opened on the bench's database so far (a backend each), and
    the backends alive on it now: what ended in between is what a pool closed again."""
    with sessions() as s:
        opened, alive = s.execute(
            text(
                "SELECT sessions, numbackends FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        ).one()
    return int(opened), int(alive)


def think_rows(f: dict[str, Any]) -> list[Row]:
    """The phase's table: wall against the ideal, calls in flight, failures, RSS."""
    runs, t_s, n_cores = f["runs"], f["think_ms"] / 1000, f["cores"]
    floor_s = f["work_cpu_ms"] / 1000 / n_cores
    daemons_ms = f["cpu_ms"].get(DAEMON_ROLE, 0.0)
    cpu_bound_s = floor_s + daemons_ms / 1000 / n_cores
    ideal_s = max(CALLS_PER_RUN * t_s + floor_s, cpu_bound_s)
    wall_s = f["wall_s"]
    limit_s = WALL_FACTOR * CALLS_PER_RUN * t_s
    cpu = f["cpu_ms"]
    total_cpu = sum(cpu.values())
    own_cpu = total_cpu - f["work_cpu_ms"] - daemons_ms
    machine = f.get("machine_cpu_ms", 0.0)
    machine_s = machine / 1000 / n_cores
    rss = f["peak_rss_mb"]
    kodo_rss = sum(mb for role, mb in rss.items() if role != "oc-compat")
    compat = f["provider"] == "compat"
    held_by = "oc-compat" if compat else "answers held by the scripted LLM"
    provider = "stub provider" if compat else "scripted LLM"
    excluded = "oc-compat" if compat else "daemons and scripted LLM"
    peak_target = PEAK_SHARE * runs
    accepted = runs - f["not_submitted"]

    def per(total_ms: float) -> float | None:
        """Per run the API accepted (the refused ones cost the API too: counted in)."""
        return total_ms / accepted if accepted else None

    since = "over the phase" if f["peak_rss_reset"] else "since start (reset refused)"
    at_once = "all at once" if not f["submit_limit"] else f"at most {f['submit_limit']} at once"
    rows = [
        Row(
            f"wall, first submit to last terminal ({runs} runs x {CALLS_PER_RUN} x {t_s:g} s)",
            wall_s,
            target=f"<= {limit_s:g} ({WALL_FACTOR:g} x 3T)",
            met=at_most(wall_s, limit_s),
            unit="s",
        ),
        Row(f"  runs accepted by the API ({at_once}) within", f["submitted_within_s"], unit="s"),
        Row(
            f"ideal: 3T + CPU floor (run's own work CPU / {n_cores} cores)"
            if compat
            else "ideal: 3T + CPU floor, or all work CPU (daemons too) / cores if more",
            ideal_s,
            unit="s",
        ),
        Row(f"  CPU floor (git, verification, {provider})", floor_s, unit="s"),
        *(
            []
            if compat
            else [Row(f"  all work CPU / {n_cores} cores (daemons too)", cpu_bound_s, unit="s")]
        ),
        Row(
            f"the machine's CPU over the phase / {n_cores} cores (no schedule ends sooner)",
            machine_s,
            unit="s",
        ),
        Row(
            f"  seconds of the phase the cores were >= {BUSY_SHARE:.0%} busy (the driver too)",
            f.get("busy_seconds_share"),
            unit="ratio",
        ),
        Row("efficiency (ideal / wall)", ideal_s / wall_s if wall_s else None, unit="ratio"),
        Row(
            f"peak provider calls in flight ({held_by})",
            f["peak_in_flight"],
            target=f">= {peak_target:g}",
            met=at_least(f["peak_in_flight"], peak_target),
            unit="count",
        ),
        Row("submit->waiting p50 (one held call: T)", f["submit_to_waiting_p50_ms"]),
        Row("approve->done p50 (two held calls: 2T)", f["approve_to_done_p50_ms"]),
        Row(
            "  provider calls per accepted run",
            f["provider_calls"] / accepted if accepted else None,
            unit="count",
        ),
        none_row("failed runs (not succeeded)", f["failed"]),
        Row(
            "  of which the API did not accept (POST /intents or /run failed)",
            f["not_submitted"],
            unit="count",
        ),
        Row(
            "requests sent again after 503/429 + Retry-After (all kinds)",
            sum(f["retried"].values()),
            unit="count",
        ),
        Row("CPU per accepted run, all processes", per(total_cpu)),
        Row("  of which kodo itself (API, workers, Postgres, Redis)", per(own_cpu)),
        Row("  of which the run's own work", per(f["work_cpu_ms"])),
        Row(
            "  Postgres backends opened and ended per accepted run (their CPU is uncounted)",
            per(f["postgres_backends_ended"]) if "postgres_backends_ended" in f else None,
            unit="count",
        ),
        Row("CPU per accepted run, the whole machine (the bench's driver excluded)", per(machine)),
        Row(f"  of which no process above accounts for ({UNACCOUNTED})", per(machine - total_cpu)),
        *([] if compat else [Row("  of which the opencode daemons", per(daemons_ms))]),
        *(Row(f"peak RSS {since}, {role}", mb, unit="MB") for role, mb in rss.items()),
        Row(
            f"peak RSS, kodo processes together ({excluded} excluded)",
            kodo_rss,
            target=f"<= {RSS_BUDGET_MB:g}",
            met=at_most(kodo_rss, RSS_BUDGET_MB),
            unit="MB",
        ),
    ]
    return rows
