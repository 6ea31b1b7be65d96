"""The state file: what this checkout started, so ``down`` stops exactly that."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from devstack.handle import DevstackError, ServiceHandle, StackPaths
from devstack.supervisor import alive, looks_like
from shared.private_file import write_private


@contextmanager
def locked(paths: StackPaths) -> Iterator[None]:
    """Serialise find-or-start across processes, so two ``up``s never start two servers."""
    paths.home.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load(paths: StackPaths) -> list[ServiceHandle]:
    """Entries of services we started; an absent file means none."""
    try:
        raw = json.loads(paths.state_file.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise DevstackError(
            f"{paths.state_file} is not JSON ({exc}); inspect or delete it"
        ) from exc
    services = raw.get("services") if isinstance(raw, dict) else None
    if not isinstance(services, list):
        raise DevstackError(f"{paths.state_file} has no 'services' list")
    return [ServiceHandle.from_json(entry) for entry in services]


def save(paths: StackPaths, handles: list[ServiceHandle]) -> None:
    """Write atomically; only owned services are ever recorded."""
    paths.home.mkdir(parents=True, exist_ok=True)
    entries = [replace(h, kind="started").to_json() for h in handles if h.owned]
    # it records the URL asked for, which may carry its password: private (helper-133)
    write_private(
        paths.state_file, json.dumps({"version": 1, "services": entries}, indent=2) + "\n"
    )


def record(paths: StackPaths, handle: ServiceHandle) -> None:
    """Add or replace the entry for ``handle``'s requested URL (a no-op for reused ones)."""
    if not handle.owned:
        return
    others = [
        h
        for h in load(paths)
        if not (h.name == handle.name and h.requested_url == handle.requested_url)
    ]
    save(paths, [*others, handle])


def forget(paths: StackPaths, gone: ServiceHandle) -> None:
    save(paths, [h for h in load(paths) if h != gone])


def find_kept(
    paths: StackPaths, name: str, requested_url: str, answers: Callable[[str], bool]
) -> ServiceHandle | None:
    """The server an earlier ``up`` started for this request, if it still runs and answers."""
    for entry in load(paths):
        if entry.name != name or entry.requested_url != requested_url or entry.pid is None:
            continue
        if runs(entry) and answers(entry.url):
            return replace(entry, kind="kept")
    return None


def runs(handle: ServiceHandle) -> bool:
    """Whether the server ``handle`` recorded still runs: the same pid, started at the same
    time (when recorded), running the same binary; a reused pid is someone else's."""
    pid = handle.pid
    return pid is not None and alive(pid, handle.start_ticks) and looks_like(pid, handle.binary)
