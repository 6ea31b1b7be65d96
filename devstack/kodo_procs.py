"""Start kodo's own processes (OpenCode-compatible server, worker, beat, collector, API,
Flower).

Used by ``kodo demo``, ``kodo up``, the bench and the end-to-end tests: real processes,
loopback only, logs to files. Each is spawned, watched and stopped by
:mod:`devstack.supervisor` (its own session, so it outlives the command that started it:
``kodo up`` records the pids and their start times and exits; ``kodo down`` signals each
process group, SIGTERM then SIGKILL after a grace period). A ``Stack(keepalive=True)``
(``kodo up``'s) runs each under :mod:`devstack.keepalive`, which starts it again when it
dies; the tests' stacks do not, since they kill processes on purpose.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from devstack.keepalive import RESTART_MARK, LogBound, wrap
from devstack.supervisor import Child, free_port, signals_held, spawn, stop_all
from shared.db.engine import make_engine, make_session_factory
from shared.queue import WORKER_QUEUES
from shared.service.tokens import Role, fresh_token
from shared.service.uow import UnitOfWork

BIN = Path(sys.executable).parent


@dataclass
class Stack:
    """The processes of one local kodo, with the environment they share."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Child] = field(default_factory=list)
    api_url: str = ""
    oc_url: str = ""
    flower_url: str = ""
    keepalive: bool = False  # run each process under devstack.keepalive
    log_bound: LogBound = field(default_factory=LogBound)  # with keepalive: rotate past it

    def start(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> Child:
        env = {**self.env, **(extra_env or {})}
        log_path = self.log_dir / f"{name}.log"
        with signals_held():  # started, then registered, before a SIGTERM may end us
            if not self.keepalive:
                child = spawn(name, argv, log_path, env=env)
            else:
                kept = spawn(name, wrap(argv, name, self.log_bound), log_path, env=env)
                child = KeptChild(kept.name, kept.popen, kept.log_path, kept.ticks, kept.log_offset)
            self.procs.append(child)
        return child

    def stop(self) -> None:
        """Stop every process, all at once (see :func:`devstack.supervisor.stop_all`)."""
        stop_all([proc.pid for proc in reversed(self.procs)])

    def proc(self, name: str) -> Child:
        return next(p for p in self.procs if p.name == name)


@dataclass
class KeptChild(Child):
    """A process run under :mod:`devstack.keepalive`; its pid is the wrapper's.

    ``alive`` means the process first started still runs: the start-up waits below fail
    as soon as it exits (a broken config), instead of watching the wrapper restart it
    until their deadline. The wrapper's restart line, logged after ``log_offset`` (the
    log's size at spawn: logs are appended to), says it exited.
    """

    def alive(self) -> bool:
        return super().alive() and not self.restarted()

    def restarted(self) -> bool:
        return RESTART_MARK in self.log_since_start()


T = TypeVar("T")


def start_together(starts: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Run each start (spawn a process and wait until it is ready) at once; their results
    by name. A stack's processes need nothing of each other once the daemon is up (each
    only Postgres, Redis and the daemon), and booting Python is most of a start: one
    after another ``kodo up``'s five took 13 s here, together 9 s on two cores.
    Every start is waited for, failed or not, before the first failure is raised, so the
    caller's ``Stack.stop()`` finds every process that was spawned."""
    with ThreadPoolExecutor(max_workers=max(1, len(starts)), thread_name_prefix="up") as pool:
        futures = {name: pool.submit(start) for name, start in starts.items()}
    for future in futures.values():
        failed = future.exception()
        if failed is not None:
            raise failed
    return {name: future.result() for name, future in futures.items()}


WORKER_APP = "services.worker.celery_app:app"
"""kodo's Celery app. A module that imports it and adds to it (``bench.kodo_worker``
counts SQL) may run in its place: ``start_worker(..., app="pkg.module:app")``."""


KODO_NODE = "kodo@%h"
"""The worker ``kodo up`` starts, as Flower and ``celery inspect`` name it (one a host)."""


def celery_argv(*args: str, app: str = WORKER_APP) -> list[str]:
    return [str(BIN / "celery"), "-A", app, *args]


def start_oc_compat(stack: Stack, seed: int, port: int | None = None) -> Child:
    """The OpenCode-compatible server on ``port`` (default: any free one)."""
    port = port or free_port()
    proc = stack.start(
        "oc-compat",
        [
            str(BIN / "kodo"),
            "oc-compat",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            str(seed),
        ],
    )
    stack.oc_url = f"http://127.0.0.1:{port}"
    stack.env["OC_BASE_URL"] = stack.oc_url
    wait_http(f"{stack.oc_url}/global/health", proc)
    return proc


WORKER_CONCURRENCY = 8
"""Steps one worker runs at once (threads), as compose and the README's manual start
run it: a step's git and verification commands are processes of their own, so more
threads than cores overlap their waits."""


def start_worker(
    stack: Stack,
    name: str = "worker",
    concurrency: int = WORKER_CONCURRENCY,
    *,
    node: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    app: str = WORKER_APP,
    through: Sequence[str] = (),
) -> Child:
    """A Celery worker on the ``kodo`` queue (steps) and ``kodo.housekeeping`` (beat's
    passes); ``node`` defaults to a per-process name (``kodo up`` passes ``kodo@%h``).
    ``through``: a program the worker is started by (its argv before the worker's).

    One process running ``concurrency`` steps at once on threads: a step mostly waits
    (on the provider, Postgres, git), so threads overlap those waits at a fraction of
    the memory of prefork children, and every per-process resource (engine pool, httpx
    client, L1 cache) is shared by the steps.
    """
    return stack.start(
        name,
        [
            *through,
            *celery_argv(
                "worker",
                "-Q",
                WORKER_QUEUES,
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-l",
                "INFO",
                "-n",
                node or f"{name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                app=app,
            ),
        ],
        extra_env=extra_env,
    )


def start_beat(stack: Stack) -> Child:
    schedule = stack.log_dir / "celerybeat-schedule"
    return stack.start("beat", celery_argv("beat", "-l", "INFO", "-s", str(schedule)))


def start_collector(stack: Stack, *, wait: bool = True) -> Child:
    """The collector (services.worker.collector): wakes steps parked on sent calls.
    With ``wait``, returns once it followed the daemon's event stream and reconciled."""
    proc = stack.start("collector", [sys.executable, "-m", "services.worker.collector"])
    if wait:
        wait_log_line(proc, "collector.connected", what="collector")
    return proc


def wait_log_line(proc: Child, needle: str, *, what: str, deadline_s: float = 60.0) -> None:
    """Until ``proc``'s log holds ``needle``; raise if it exits or time runs out."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.log_path.exists() and needle in proc.log_path.read_text(errors="replace"):
            return
        if not proc.alive():
            raise RuntimeError(f"{what} exited early:\n{proc.log_tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready in {deadline_s:g}s:\n{proc.log_tail()}")


API_CONF = "python:services.api.gunicorn_conf"
"""The one serving shape (gevent workers, header and body deadlines): compose, the bench
and ``kodo up`` all start ``gunicorn -c API_CONF -b HOST:PORT services.api.wsgi:app``."""


def api_argv(bind: str, app: str = "services.api.wsgi:app") -> list[str]:
    return [str(BIN / "gunicorn"), "-c", API_CONF, "-b", bind, app]


def start_api(
    stack: Stack, port: int | None = None, extra_env: Mapping[str, str] | None = None
) -> Child:
    """The API under gunicorn on ``port`` (default: any free one), ready at ``/healthz``."""
    port = port or free_port()
    proc = stack.start("api", api_argv(f"127.0.0.1:{port}"), extra_env=extra_env)
    stack.api_url = f"http://127.0.0.1:{port}"
    wait_http(f"{stack.api_url}/healthz", proc)
    return proc


@dataclass(frozen=True)
class FlowerAuth:
    """Flower's basic-auth credentials: its UI and API both refuse requests without them."""

    user: str
    password: str

    @property
    def basic(self) -> str:
        return f"{self.user}:{self.password}"

    @classmethod
    def generate(cls) -> FlowerAuth:
        return cls("kodo", secrets.token_urlsafe(24))


def flower_auth(path: Path) -> FlowerAuth:
    """The credentials stored at ``path`` (``user:password``, mode 0600), made on first use."""
    try:
        user, sep, password = path.read_text().strip().partition(":")
        if sep and user and password:
            path.chmod(0o600)
            return FlowerAuth(user, password)
    except FileNotFoundError:
        pass
    auth = FlowerAuth.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(auth.basic + "\n")
    path.chmod(0o600)
    return auth


def start_flower(stack: Stack, auth: FlowerAuth, port: int | None = None) -> Child:
    """Flower on loopback behind basic auth (UI and ``/api/*`` alike).

    The credentials go in through the environment (``FLOWER_BASIC_AUTH``), not argv,
    where any local user could read them; ``FLOWER_UNAUTHENTICATED_API`` is removed
    from what Flower inherits, so its API is never opened without them.
    """
    port = port or free_port()
    stack.env.pop("FLOWER_UNAUTHENTICATED_API", None)
    proc = stack.start(
        "flower",
        celery_argv("flower", "--address=127.0.0.1", f"--port={port}"),
        extra_env={"FLOWER_BASIC_AUTH": auth.basic},
    )
    stack.flower_url = f"http://127.0.0.1:{port}"
    wait_http(f"{stack.flower_url}/healthcheck", proc)  # the one page open without credentials
    return proc


def wait_http(url: str, proc: Child, deadline_s: float = 90.0) -> None:
    """Poll ``url`` with short timeouts until it answers 200 (a boot-time probe can hang).

    The deadline is generous: on a loaded two-core host a gevent API has taken 29 s to
    answer its first request; a process that exits is reported at once."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not ready at {url}:\n{proc.log_tail()}")


def wait_worker_ready(proc: Child, deadline_s: float = 90.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        if " ready." in proc.log_since_start():  # not an earlier worker's line
            return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not ready:\n{proc.log_tail()}")


def ready_worker(proc: Child, deadline_s: float = 90.0) -> Child:
    """``proc``, once ready: ``ready_worker(start_worker(...))`` for :func:`start_together`."""
    wait_worker_ready(proc, deadline_s)
    return proc


def issue_token(database_url: str, name: str, role: str) -> str:
    """A fresh API token for a scripted stack (demo, tests): revokes NAME's old one first."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with UnitOfWork(make_session_factory(engine)) as uow:
            return fresh_token(uow, name, Role(role), now=datetime.now(UTC))
    finally:
        engine.dispose()
