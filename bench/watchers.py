"""The SSE phase: W open watchers on ``GET /runs/{id}/events`` while other requests are timed.

Issue 11 asks that 1,000 open watchers not slow the API down. The watchers follow
runs parked at ``waiting_input`` (never approved here), so their streams stay open: each
counts as open once it received its first event (the run's snapshot), and as still
open at the end if the server had not closed it. ``/healthz`` and ``GET /runs/{id}``
are then timed one request at a time, on a connection of their own, with no watcher
and with all W open (p50 and p99 of each).

The watched API is a process of its own, started in the default shape (``kodo up``:
gunicorn gevent workers, ``KODO_API_WORKERS``, ``KODO_API_CONNECTIONS``,
``KODO_SSE_MAX_STREAMS`` at their defaults) unless W does not fit it: then the
setting is raised to fit and the table says the default cannot hold W. The per-token
stream cap is always lifted: the bench holds every watcher with its one token, where
W real watchers would be many users.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import api_argv, wait_http
from devstack.supervisor import free_port
from shared.config import DEFAULTS

from .kodo_phase import RUNS_PER_CLIENT, Driver
from .report import Row, at_least, at_most
from .sse import StreamError, run_events
from .stack import Bench, start_workers, stop_workers
from .stats import percentile

WATCHED_RUNS = 10  # runs parked at waiting_input; the watchers are spread over them
PROBES = 300  # timed requests of each kind, with and without the watchers
PROBE_CONNECTIONS = 2  # the timing client's connections (besides the watchers')
OPEN_AT_ONCE = 100  # watchers opening at the same moment (a connect storm is not the test)
OPEN_DEADLINE_S = 120.0  # a watcher not open by then counts as not opened
HEALTHZ_P99_MS = 50.0
RUN_P99_MS = 100.0


@dataclass(frozen=True)
class Shape:
    """The watched API's settings: the defaults, raised only where W does not fit."""

    watchers: int
    max_streams: int
    connections: int
    default_max_streams: int = int(DEFAULTS["KODO_SSE_MAX_STREAMS"])
    default_connections: int = int(DEFAULTS["KODO_API_CONNECTIONS"])

    @classmethod
    def for_watchers(cls, watchers: int) -> Shape:
        """Streams are counted over every API process (one Redis set): W must fit the total.
        Connections are per gunicorn worker and not spread evenly, so one worker may hold
        every watcher and the timing connections."""
        need_connections = watchers + PROBE_CONNECTIONS + 8
        return cls(
            watchers,
            max_streams=max(int(DEFAULTS["KODO_SSE_MAX_STREAMS"]), watchers),
            connections=max(int(DEFAULTS["KODO_API_CONNECTIONS"]), need_connections),
        )

    @property
    def default_holds(self) -> bool:
        return (self.max_streams, self.connections) == (
            self.default_max_streams,
            self.default_connections,
        )

    def env(self) -> dict[str, str]:
        return {
            "KODO_SSE_PER_TOKEN": str(self.watchers + 8),
            "KODO_SSE_MAX_STREAMS": str(self.max_streams),
            "KODO_API_CONNECTIONS": str(self.connections),
        }


@dataclass
class Watchers:
    """What the watchers saw: opened (first event received), open now, refused or broken."""

    wanted: int
    opened: int = 0
    open_now: int = 0
    closed_early: int = 0
    errors: list[str] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def tally(self) -> None:
        """Every watcher is open or has failed: the measurement can start."""
        if self.opened + len(self.errors) >= self.wanted:
            self.settled.set()


async def _watch(
    http: httpx.AsyncClient, run_id: str, seen: Watchers, gate: asyncio.Semaphore
) -> None:
    """Open one stream, count it open at its first event, then read until cancelled."""
    opened = False
    try:
        async with aclosing(run_events(http, run_id)) as events:
            async with gate:
                await anext(events)
            opened = True
            seen.opened += 1
            seen.open_now += 1
            seen.tally()
            async for _ in events:
                pass
        seen.closed_early += 1  # the server ended a stream of a run that is still waiting
    except (httpx.HTTPError, StreamError, StopAsyncIteration) as exc:
        seen.errors.append(f"{run_id}: {exc!r}"[:300])
        seen.tally()
    finally:
        if opened:
            seen.open_now -= 1


async def _probe(http: httpx.AsyncClient, paths: list[str]) -> dict[str, list[float]]:
    """Each path requested in turn, ``PROBES`` times over; milliseconds per path kind."""
    took: dict[str, list[float]] = {}
    for _ in range(PROBES):
        for path in paths:
            began = time.perf_counter()
            reply = await http.get(path)
            ms = (time.perf_counter() - began) * 1000
            if reply.status_code != 200:
                raise RuntimeError(f"GET {path}: {reply.status_code} {reply.text[:200]}")
            took.setdefault(path.split("/")[1], []).append(ms)
    return took


def _summary(took: dict[str, list[float]]) -> dict[str, float | None]:
    return {
        f"{kind}_{q}": percentile(values, q)
        for kind, values in sorted(took.items())
        for q in (50, 99)
    }


async def _parked_runs(bench: Bench, sessions: sessionmaker[Session], n: int) -> list[str]:
    """``n`` runs submitted and followed to ``waiting_input``, where they stay."""
    driver = Driver(bench.stack.api_url, bench.repos, runs=n, sessions=sessions, token=bench.token)

    async def one() -> str:
        http = driver.clients[0]
        run_id, _, _ = await driver.submit(http)
        async with aclosing(run_events(http, run_id, until="waiting_input")) as events:
            async for event in events:
                if event["status"] == "waiting_input":
                    return run_id
        raise RuntimeError(f"run {run_id} ended its stream before waiting_input")

    try:
        return list(await asyncio.gather(*(one() for _ in range(n))))
    finally:
        await driver.close()


async def _measure(api_url: str, token: str, run_ids: list[str], wanted: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    probe_limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=api_url, headers=auth, limits=probe_limits, timeout=30.0
    ) as probe:
        paths = ["/healthz", f"/runs/{run_ids[0]}"]
        await _probe(probe, paths)  # warm: the connection, the app's first requests
        quiet = await _probe(probe, paths)
        shards = max(1, -(-wanted // RUNS_PER_CLIENT))
        per_client = -(-wanted // shards) + 2
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        clients = [
            httpx.AsyncClient(base_url=api_url, headers=auth, limits=limits, timeout=60.0)
            for _ in range(shards)
        ]
        seen = Watchers(wanted)
        gate = asyncio.Semaphore(OPEN_AT_ONCE)
        began = time.perf_counter()
        clients_cycle = itertools.cycle(clients)
        runs_cycle = itertools.cycle(run_ids)
        tasks = [
            asyncio.create_task(_watch(next(clients_cycle), next(runs_cycle), seen, gate))
            for _ in range(wanted)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.settled.wait(), OPEN_DEADLINE_S)
            open_s = time.perf_counter() - began
            loaded = await _probe(probe, paths)
            still_open = seen.open_now
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.aclose()
    return {
        "opened": seen.opened,
        "still_open": still_open,
        "closed_early": seen.closed_early,
        "errors": seen.errors[:20],
        "error_count": len(seen.errors),
        "open_s": open_s,
        "quiet": _summary(quiet),
        "loaded": _summary(loaded),
    }


def sse(bench: Bench, sessions: sessionmaker[Session], *, watchers: int) -> dict[str, Any]:
    """Park runs at waiting_input, start the watched API, open W watchers, time requests."""
    shape = Shape.for_watchers(watchers)
    start_workers(bench, app="bench.kodo_worker:app", queue="kodo", count=1, pool="threads")
    try:
        run_ids = asyncio.run(_parked_runs(bench, sessions, min(WATCHED_RUNS, watchers)))
    finally:
        stop_workers(bench)
    port = free_port()
    proc = bench.stack.start("api-sse", api_argv(f"127.0.0.1:{port}"), extra_env=shape.env())
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc)
        figures = asyncio.run(_measure(url, bench.token, run_ids, watchers))
    finally:
        proc.stop()
        bench.stack.procs.remove(proc)
    return {
        "watchers": watchers,
        "watched_runs": len(run_ids),
        "probes": PROBES,
        "shape": {
            "KODO_SSE_MAX_STREAMS": shape.max_streams,
            "KODO_API_CONNECTIONS": shape.connections,
            "default_holds": shape.default_holds,
        },
        **figures,
    }


def sse_rows(f: dict[str, Any]) -> list[Row]:
    w = f["watchers"]
    shape = f["shape"]
    quiet, loaded = f["quiet"], f["loaded"]
    return [
        Row(
            f"watchers open (first event received), of {w}",
            f["opened"],
            target=f">= {w}",
            met=at_least(f["opened"], w),
            unit="count",
        ),
        Row(
            "  still open after the timed requests",
            f["still_open"],
            target=f">= {w}",
            met=at_least(f["still_open"], w),
            unit="count",
        ),
        Row("  refused or broken", f["error_count"], unit="count"),
        Row("  seconds to open them all", f["open_s"], unit="s"),
        Row(
            f"  the default shape holds them (KODO_SSE_MAX_STREAMS={shape['KODO_SSE_MAX_STREAMS']},"
            f" KODO_API_CONNECTIONS={shape['KODO_API_CONNECTIONS']})",
            None,
            target="yes",
            met=shape["default_holds"],
            unit="",
        ),
        Row("/healthz p50, no watcher", quiet["healthz_50"]),
        Row("/healthz p99, no watcher", quiet["healthz_99"]),
        Row(f"/healthz p50, {w} watchers", loaded["healthz_50"]),
        Row(
            f"/healthz p99, {w} watchers",
            loaded["healthz_99"],
            target=f"<= {HEALTHZ_P99_MS:g}",
            met=at_most(loaded["healthz_99"], HEALTHZ_P99_MS),
        ),
        Row("GET /runs/{id} p50, no watcher", quiet["runs_50"]),
        Row("GET /runs/{id} p99, no watcher", quiet["runs_99"]),
        Row(f"GET /runs/{{id}} p50, {w} watchers", loaded["runs_50"]),
        Row(
            f"GET /runs/{{id}} p99, {w} watchers",
            loaded["runs_99"],
            target=f"<= {RUN_P99_MS:g}",
            met=at_most(loaded["runs_99"], RUN_P99_MS),
        ),
    ]
