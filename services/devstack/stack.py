"""The whole stack: ``up`` (both services, database, migrations), ``status`` and ``down``."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from services.devstack import pgurl, procs, redis_server, state
from services.devstack.database import ensure_database, migrate
from services.devstack.handle import ServiceHandle, StackPaths
from services.devstack.postgres_server import ensure_postgres
from services.devstack.redis_server import ensure_redis

_PROBES: dict[str, Callable[[str], bool]] = {
    "postgres": lambda url: pgurl.answers(url),
    "redis": redis_server.answers,
}


@dataclass(frozen=True)
class Stack:
    postgres: ServiceHandle
    redis: ServiceHandle
    database_created: bool


def up(database_url: str, redis_url: str, *, home: Path | None = None) -> Stack:
    """Ensure both services, create the database if missing, migrate it to head."""
    pg = ensure_postgres(database_url, home=home)
    rd = ensure_redis(redis_url, home=home)
    created = ensure_database(pg.url)
    migrate(pg.url)
    return Stack(postgres=pg, redis=rd, database_created=created)


@dataclass(frozen=True)
class Entry:
    handle: ServiceHandle
    running: bool
    answering: bool


def status(*, home: Path | None = None) -> list[Entry]:
    """What the state file says we started, and whether each still runs and answers."""
    entries = []
    for handle in state.load(StackPaths.default(home)):
        running = handle.pid is not None and procs.alive(handle.pid)
        probe = _PROBES.get(handle.name)
        answering = running and probe is not None and probe(handle.url)
        entries.append(Entry(replace(handle, kind="kept"), running, answering))
    return entries


def down(
    *,
    home: Path | None = None,
    names: tuple[str, ...] = (),
    purge: bool = False,
    grace_s: float = 10.0,
) -> list[ServiceHandle]:
    """Stop what we started (all, or only ``names``); reused servers are never in the file.

    Postgres gets SIGTERM, then SIGINT ("fast" shutdown: SIGTERM alone waits for
    every client to leave), then SIGKILL at the end of the grace period.
    """
    paths = StackPaths.default(home)
    stopped = []
    with state.locked(paths):
        for handle in state.load(paths):
            if names and handle.name not in names:
                continue
            pid = handle.pid
            if pid is not None and procs.alive(pid) and procs.looks_like(pid, handle.binary):
                soften = signal.SIGINT if handle.name == "postgres" else None
                procs.stop(pid, grace_s=grace_s, soften=soften)
            if purge and handle.data_dir:
                shutil.rmtree(handle.data_dir, ignore_errors=True)
            state.forget(paths, handle)
            stopped.append(handle)
    return stopped
