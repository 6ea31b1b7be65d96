"""The whole stack: ``up`` (both services, database, migrations), ``status`` and ``down``."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from devstack import pgurl, postgres_server, procs, redis_server, state
from devstack.database import ensure_database, migrate
from devstack.handle import DevstackError, ServiceHandle, StackPaths
from devstack.postgres_server import ensure_postgres
from devstack.redis_server import ensure_redis

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


_CRASH = {"postgres": signal.SIGQUIT, "redis": signal.SIGKILL}
"""The signal that stops a server without any shutdown work: Postgres's "immediate"
shutdown (its children die with it; the next start runs crash recovery), Redis's SIGKILL."""


def restart(
    handle: ServiceHandle,
    *,
    home: Path | None = None,
    crash: bool = False,
    down_s: float = 0.0,
    timeout_s: float = 60.0,
) -> ServiceHandle:
    """Stop a server we started and start it again on the same port with the same data dir.

    ``crash`` stops it the abrupt way (see ``_CRASH``) instead of the gentle one ``down``
    uses; ``down_s`` is how long it stays down. Clients see their connections drop and must
    reconnect (and fail meanwhile). Returns the new handle (its pid differs), recorded in
    place of the old one.
    """
    if not handle.owned or handle.pid is None or handle.name not in _CRASH:
        raise DevstackError(f"only a Postgres or Redis we started can be restarted: {handle}")
    paths = StackPaths.default(home)
    with state.locked(paths):
        pid = handle.pid
        if procs.alive(pid) and procs.looks_like(pid, handle.binary):
            if crash:
                procs.kill(pid, _CRASH[handle.name])
            else:
                soften = signal.SIGINT if handle.name == "postgres" else None
                procs.stop(pid, soften=soften)
        time.sleep(down_s)
        again = (
            postgres_server.start_again if handle.name == "postgres" else redis_server.start_again
        )
        fresh = again(handle, paths, timeout_s=timeout_s)
        state.record(paths, fresh)
        return fresh
