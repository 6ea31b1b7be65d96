"""The benchmark's processes: its own Redis, oc-compat, workers, beat and the API.

Everything binds 127.0.0.1 on free ports. Postgres is the one already answering at
``--database-url`` (a fresh ``kodo_bench`` database on it, migrated to head); Redis is
private by default, so ``INFO commandstats`` counts only the benchmark's traffic.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import RedisError

from devstack.database import migrate, recreate_database
from devstack.kodo_procs import (
    BIN,
    Stack,
    api_argv,
    start_beat,
    start_collector,
    start_oc_compat,
    wait_http,
    wait_worker_ready,
)
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import Child, free_port
from shared.db.engine import make_engine, make_session_factory
from shared.queue import QUEUE, WORKER_QUEUES
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork

KODO_REDIS_DB = 10
BASELINE_REDIS_DB = 11
REPOS = 16
"""Runs are spread over this many sample repositories by default (``--repos``): no git
lock contention between workers. A team's runs usually share one repository, whose
worktree bookkeeping every run then goes through (``--repos 1`` measures that)."""


def with_redis_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


@dataclass
class Bench:
    """One benchmark's stack and the places it writes to."""

    stack: Stack
    root: Path
    database_url: str
    redis_url: str  # kodo's broker
    baseline_redis_url: str  # the bare-Celery broker and result backend
    sql_dir: Path
    token: str
    repos: list[Path] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def oc(self, method: str, path: str) -> dict[str, Any]:
        """One request to oc-compat's own endpoints (``/__kodo/stats``, ``/__kodo/reset``)."""
        reply = httpx.request(method, f"{self.stack.oc_url}{path}", timeout=30.0)
        reply.raise_for_status()
        body = reply.json()
        return body if isinstance(body, dict) else {"ok": body}


def start_redis(stack: Stack) -> str:
    """A private redis-server (no persistence) on a free loopback port."""
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: pass --redis-url to use a running Redis")
    stack.start(
        "redis",
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    end = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return url
        except RedisError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 (a tmpfs where the machine mounts one)


def on_tmpfs(folder: Path) -> bool:
    """``folder`` is a tmpfs mount point (as /proc/mounts lists them)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(
        fields[1] == str(folder) and fields[2] == "tmpfs"
        for fields in (line.split() for line in mounts)
        if len(fields) > 2
    )


def counters_dir(root: Path) -> Path:
    """Where every process publishes its SQL counts (:mod:`bench.sqlcount`): a folder of
    the machine's tmpfs when it has one, linked from ``root/sqlcount``; else that folder.

    Each process rewrites its file five times a second (a new file renamed over the
    last): on this machine's ext4, which has no journal, every file created scans the
    inodes deleted in the last seconds (perf, 300 runs at once: 15% of the machine's CPU
    in ``__ext4_new_inode``), so the bench's own counting made kodo's file creations
    dearer. Removed with ``root`` (:func:`discard`)."""
    linked = root / "sqlcount"
    if on_tmpfs(SHARED_MEMORY) and os.access(SHARED_MEMORY, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="kodo-bench-counts-", dir=SHARED_MEMORY))
        linked.symlink_to(folder)
        return folder
    linked.mkdir()
    return linked


def discard(bench: Bench) -> None:
    """Remove the bench's folder and its counters wherever they are."""
    shutil.rmtree(bench.root, ignore_errors=True)
    shutil.rmtree(bench.sql_dir, ignore_errors=True)


def prepare(
    root: Path,
    database_url: str,
    redis_url: str | None,
    approval_poll_s: float,
    oc_timeout_ms: int = 30000,
    repos: int = REPOS,
) -> Bench:
    """Fresh database and Redis, sample repositories, environment; no kodo process yet.

    ``oc_timeout_ms`` bounds a sent call's wait for its answer: longer than any think
    time the bench holds calls for, so a held call is never timed out (issue 11's
    think-time phase measures throughput, not the deadline)."""
    root.mkdir(parents=True, exist_ok=True)
    recreate_database(database_url)
    migrate(database_url)
    engine = make_engine(database_url, pool_size=1)
    with UnitOfWork(make_session_factory(engine)) as uow:
        token = create_token(uow, "bench", Role.ADMIN)  # submits and approves
    engine.dispose()
    repo_root = root / "repos"
    sql_dir = counters_dir(root)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KODO_REPO_ROOTS": str(repo_root),
        "KODO_WORKSPACE_DIR": str(root / "workspaces"),
        "RANDOM_SEED": "0",
        "APPROVAL_POLL_S": str(approval_poll_s),
        "OC_TIMEOUT_MS": str(oc_timeout_ms),
        "KODO_COUNT_SQL": "1",
        "KODO_ALLOW_SELF_APPROVAL": "1",  # the one bench token submits and approves
        # Verification commands (``python3 -m unittest``) find python3 where a default
        # ``kodo up`` finds it, on the caller's PATH (the sandbox skips version-manager
        # shims); the venv's interpreter only where the machine has no other.
        "PATH": os.pathsep.join(p for p in (os.environ.get("PATH", ""), str(BIN)) if p),
        "KODO_SQL_COUNT_DIR": str(sql_dir),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path.cwd()), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    stack = Stack(env=env, log_dir=root / "logs")
    try:  # a failure (or a SIGTERM) past here stops the Redis it started, too
        base = redis_url or start_redis(stack)
        kodo_redis = with_redis_db(base, KODO_REDIS_DB)
        baseline_redis = with_redis_db(base, BASELINE_REDIS_DB)
        for url in (kodo_redis, baseline_redis):
            Redis.from_url(url).flushdb()
        env["REDIS_URL"] = kodo_redis
        env["BENCH_BASELINE_REDIS_URL"] = baseline_redis
        samples = [create_sample_repo(repo_root / f"calc{i}") for i in range(repos)]
    except BaseException:
        stack.stop()
        shutil.rmtree(sql_dir, ignore_errors=True)
        raise
    return Bench(stack, root, database_url, kodo_redis, baseline_redis, sql_dir, token, samples)


THREADS_PER_WORKER = 4
"""``--pool threads``: each worker process runs this many tasks at once, so one step's
waits (Postgres, the provider, git) overlap another's work."""


def start_workers(
    bench: Bench,
    *,
    app: str,
    queue: str,
    count: int,
    pool: str,
    threads: int = THREADS_PER_WORKER,
) -> list[Child]:
    """``count`` worker processes: solo (one task at a time) or with a pool of
    ``threads`` each; or one prefork worker with ``count`` children."""
    procs = []
    if pool == "prefork":
        shape = [("prefork", str(count))]
    elif pool == "threads":
        shape = [("threads", str(threads))] * count
    else:
        shape = [("solo", "1")] * count
    for i, (kind, concurrency) in enumerate(shape):
        name = f"{app.split('.')[-1].split(':')[0]}-{i}"
        argv = [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "-Q",
            WORKER_QUEUES if queue == QUEUE else queue,  # kodo's workers take beat's passes too
            "-P",
            kind,
            "-c",
            concurrency,
            "-l",
            "INFO",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        procs.append(bench.stack.start(name, argv))
    for proc in procs:
        wait_worker_ready(proc, deadline_s=60)
    bench.workers = procs
    return procs


def stop_workers(bench: Bench) -> None:
    for proc in bench.workers:
        proc.stop()
    bench.workers = []


def start_kodo_services(bench: Bench, *, api_threads: int, oc_compat: bool = True) -> None:
    """oc-compat (no think time), beat and the API in its deployed shape (gevent: an SSE
    stream is a greenlet). ``api_threads`` is kept for callers; streams need no threads.
    ``oc_compat=False``: the environment already points at real daemons."""
    del api_threads
    if oc_compat:
        start_oc_compat(bench.stack, seed=0)
    start_beat(bench.stack)
    start_collector(bench.stack)
    port = free_port()
    proc = bench.stack.start(
        "api",
        api_argv(f"127.0.0.1:{port}", "bench.kodo_api:app"),
        # The bench watches every run over SSE with one token: lift the per-token cap;
        # keep-alive (the header deadline too) outlives httpx's 5 s idle expiry.
        extra_env={
            "KODO_SSE_PER_TOKEN": "100000",
            "KODO_SSE_MAX_STREAMS": "100000",
            "KODO_INTENT_RATE": "1000000/minute",
            "KODO_HEADER_TIMEOUT_S": "30",
        },
    )
    bench.stack.api_url = f"http://127.0.0.1:{port}"
    wait_http(f"{bench.stack.api_url}/healthz", proc)
