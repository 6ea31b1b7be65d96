"""The whole stack: ``up`` (both services, database, migrations), ``status`` and ``down``."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from devstack import pgurl, postgres_server, redis_server, state, supervisor
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
        running = state.runs(handle)
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
            if handle.pid is not None and state.runs(handle):
                _stop(handle.pid, handle.name, grace_s=grace_s)
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
    paths = StackPaths.default(home)
    with state.locked(paths):
        current = _take_away(handle, paths, crash=crash)
        time.sleep(down_s)
        return _bring_back(current, paths, timeout_s=timeout_s)


@contextmanager
def stopped(
    handle: ServiceHandle,
    *,
    home: Path | None = None,
    grace_s: float = 10.0,
    timeout_s: float = 60.0,
) -> Iterator[None]:
    """Keep a server we started stopped (gently, as ``down``) for the ``with`` body, then
    start it again on the same port and record it, as ``restart`` does.

    Unlike ``down`` followed by a bare start, the server stays in the state file, so the
    stack's ``down`` stops it afterwards: the earlier shape leaked one redis-server per
    test run. The state lock is not held across the body. ``handle`` names the server
    by what it was started for: after a first ``stopped`` (or ``restart``) the same
    handle reaches the server running now, not the pid it was given.
    """
    paths = StackPaths.default(home)
    with state.locked(paths):
        current = _take_away(handle, paths, grace_s=grace_s)
    try:
        yield
    finally:
        with state.locked(paths):
            _bring_back(current, paths, timeout_s=timeout_s)


def _take_away(
    handle: ServiceHandle, paths: StackPaths, *, grace_s: float = 10.0, crash: bool = False
) -> ServiceHandle:
    """Stop the server the state file records for ``handle``'s request; that entry.

    The recorded entry, not ``handle``: a handle kept across an earlier restart names a
    pid that is gone, and trusting it would stop nothing, then start a second server on
    the port the first still holds (its answer looks like the new one's) and record the
    dead pid, leaking the live server."""
    current = next(
        (
            entry
            for entry in state.load(paths)
            if entry.name == handle.name and entry.requested_url == handle.requested_url
        ),
        None,
    )
    if current is None or current.pid is None or current.name not in _CRASH:
        raise DevstackError(f"only a Postgres or Redis we started can be restarted: {handle}")
    if state.runs(current):
        _stop(current.pid, current.name, grace_s=grace_s, crash=crash)
    return current


def _bring_back(handle: ServiceHandle, paths: StackPaths, *, timeout_s: float) -> ServiceHandle:
    again = postgres_server.start_again if handle.name == "postgres" else redis_server.start_again
    fresh = again(handle, paths, timeout_s=timeout_s)
    state.record(paths, fresh)
    return fresh


def _stop(pid: int, name: str, *, grace_s: float = 10.0, crash: bool = False) -> None:
    """Stop one server of ours by signalling it alone (Postgres stops its own children).

    Gently: SIGTERM, then for Postgres SIGINT ("fast" shutdown: SIGTERM alone waits for
    every client to leave), then SIGKILL at the end of the grace period. ``crash``: the
    signal of ``_CRASH`` first.
    """
    soften = signal.SIGINT if name == "postgres" and not crash else None
    first = _CRASH[name] if crash else signal.SIGTERM
    outcome = supervisor.stop(pid, grace_s=grace_s, group=False, soften=soften, first=first)
    if outcome == supervisor.SURVIVED:
        raise DevstackError(f"{name} (pid {pid}) survived SIGKILL")
