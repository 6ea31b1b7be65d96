"""Find-or-start Redis: reuse one that answers PING, else a private one without persistence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from devstack import state, supervisor
from devstack.binaries import redis_server_binary
from devstack.handle import DevstackError, ServiceHandle, StackPaths


def ping_error(url: str, *, timeout_s: float = 1.0) -> str | None:
    """None when a real PING at ``url`` is answered, else why not."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return None if client.ping() else "PING not answered"
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        client.close()


def answers(url: str) -> bool:
    return ping_error(url) is None


def ensure_redis(
    url: str, *, home: Path | None = None, timeout_s: float = 20.0, install_missing: bool = True
) -> ServiceHandle:
    """Reuse the Redis at ``url`` if it answers PING; else start (or keep) a private one."""
    paths = StackPaths.default(home)
    with state.locked(paths):
        # Ours first: a server we started on the requested port also answers there.
        kept = state.find_kept(paths, "redis", url, answers)
        if kept is not None:
            return kept
        reason = ping_error(url)
        if reason is None:
            return ServiceHandle(name="redis", kind="reused", url=url, requested_url=url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host not in supervisor.LOCAL_HOSTS:
            raise DevstackError(
                f"no Redis answers at {host} ({reason}); it is not local, so none is started"
            )
        handle = _start(url, paths, timeout_s, install_missing)
        state.record(paths, handle)
        return handle


def start_again(handle: ServiceHandle, paths: StackPaths, *, timeout_s: float) -> ServiceHandle:
    """Start a stopped server of ours again on the same port (it keeps no data)."""
    port = urlsplit(handle.url).port
    fresh = _start(handle.url, paths, timeout_s, install_missing=False, port=port)
    return replace(fresh, requested_url=handle.requested_url)


def _start(
    url: str, paths: StackPaths, timeout_s: float, install_missing: bool, port: int | None = None
) -> ServiceHandle:
    binary = redis_server_binary(install_missing=install_missing)
    parts = urlsplit(url)
    port = port or supervisor.choose_port(parts.hostname or "", parts.port or 6379)
    work_dir = paths.data_root / f"redis-{port}"
    work_dir.mkdir(parents=True, exist_ok=True)
    log_file = paths.data_root / f"redis-{port}.log"
    argv = [str(binary), "--bind", supervisor.LOOPBACK, "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(work_dir)]
    child = supervisor.spawn("redis", argv, log_file)
    # Our server has no password: drop credentials, keep scheme, db and query.
    new_url = urlunsplit(
        (parts.scheme, f"{supervisor.LOOPBACK}:{port}", parts.path, parts.query, "")
    )
    supervisor.wait_until(lambda: answers(new_url), child, timeout_s, "redis")
    return ServiceHandle(
        name="redis",
        kind="started",
        url=new_url,
        requested_url=url,
        pid=child.pid,
        start_ticks=child.ticks,
        binary=str(binary),
        data_dir=str(work_dir),
        log_file=str(log_file),
    )
