"""``.kodo/up.json``: what ``kodo up`` started, so ``kodo down`` stops exactly that.

The file also tells the other commands where the local stack listens (the API URL
for ``kodo run``, the broker and database for ``kodo doctor``), so a shell needs no
exports after ``kodo up``. Postgres and Redis themselves are the devstack's
(``.kodo/stack.json``); this file only names the URLs they were found at.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.handle import repo_root

STATE_NAME = "up.json"


class StateError(RuntimeError):
    """The state file exists but cannot be trusted; the message says what to do."""


@dataclass(frozen=True)
class ProcEntry:
    """One process we started: its group is signalled by ``kodo down``."""

    name: str
    pid: int
    log: str
    url: str | None = None
    start_ticks: int | None = None  # /proc start time: a reused pid is never signalled


@dataclass(frozen=True)
class UpState:
    api_url: str
    oc_url: str
    flower_url: str
    database_url: str
    redis_url: str
    log_dir: str
    procs: list[ProcEntry] = field(default_factory=list)
    services_started: list[str] = field(default_factory=list)  # postgres/redis `up` started

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, raw: object, where: Path) -> UpState:
        """Parse strictly: a malformed file is reported, never half-trusted."""
        if not isinstance(raw, dict):
            raise StateError(f"{where} is not a JSON object; inspect or delete it")
        texts = {}
        for key in ("api_url", "oc_url", "flower_url", "database_url", "redis_url", "log_dir"):
            value = raw.get(key)
            if not isinstance(value, str):
                raise StateError(f"{where}: {key!r} is missing; inspect or delete it")
            texts[key] = value
        procs_raw = raw.get("procs")
        if not isinstance(procs_raw, list):
            raise StateError(f"{where}: 'procs' is not a list; inspect or delete it")
        procs = []
        for entry in procs_raw:
            if not isinstance(entry, dict):
                raise StateError(f"{where}: bad process entry {entry!r}")
            name, pid, log, url = (entry.get(k) for k in ("name", "pid", "log", "url"))
            ticks = entry.get("start_ticks")
            if not (isinstance(name, str) and isinstance(pid, int) and isinstance(log, str)):
                raise StateError(f"{where}: bad process entry {entry!r}")
            procs.append(
                ProcEntry(
                    name,
                    pid,
                    log,
                    url if isinstance(url, str) else None,
                    ticks if isinstance(ticks, int) else None,
                )
            )
        services = raw.get("services_started", [])
        if not (isinstance(services, list) and all(isinstance(x, str) for x in services)):
            raise StateError(f"{where}: 'services_started' is not a list of names")
        return cls(
            api_url=texts["api_url"],
            oc_url=texts["oc_url"],
            flower_url=texts["flower_url"],
            database_url=texts["database_url"],
            redis_url=texts["redis_url"],
            log_dir=texts["log_dir"],
            procs=procs,
            services_started=[str(x) for x in services],
        )


def default_home() -> Path:
    return (repo_root() / ".kodo").resolve()


def state_path(home: Path | None = None) -> Path:
    return (home or default_home()) / STATE_NAME


def load(home: Path | None = None) -> UpState | None:
    """The recorded stack, or None when ``kodo up`` has not run (or ``down`` cleared it)."""
    path = state_path(home)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise StateError(f"{path} is not JSON ({exc}); inspect or delete it") from exc
    return UpState.from_json(raw, path)


def save(state: UpState, home: Path | None = None) -> Path:
    """Write atomically, so a reader never sees half a file; mode 0600 from the first byte
    (it names the database URL, which may carry a password)."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.unlink(missing_ok=True)  # a leftover may have other modes or owners
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def clear(home: Path | None = None) -> None:
    state_path(home).unlink(missing_ok=True)


def load_quietly(home: Path | None = None) -> UpState | None:
    """For URL defaults only: an unreadable file means "no default", not a crash."""
    try:
        return load(home)
    except StateError:
        return None
