"""Ports and background processes: spawn detached, check liveness, stop gently then firmly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from devstack.handle import DevstackError

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({"", "127.0.0.1", "localhost", "::1"})

# Popen objects for servers this process spawned: kept referenced so they are
# reaped (not left as zombies that still look alive) and never garbage-collected
# while running.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def port_is_free(port: int) -> bool:
    """True when nothing holds ``127.0.0.1:port`` (we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """An ephemeral port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def choose_port(host: str, port: int) -> int:
    """The requested port when it is local and free (so the URL stays valid), else a free one."""
    if host in LOCAL_HOSTS and port_is_free(port):
        return port
    return free_port()


def private_log(path: Path) -> BinaryIO:
    """Open ``path`` for appending, readable by its owner only (0600, even if it existed):
    a log may quote what a process was told, a URL with a password included."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def spawn(argv: Sequence[str], log_file: Path, *, user: str | None = None) -> int:
    """Start a server in its own session, output to ``log_file``, detached from our stdio.

    Detaching matters: ``eval "$(kodo stack up --env)"`` would otherwise wait for
    the server to close the pipe.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with private_log(log_file) as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=_group_of(user),
            extra_groups=[] if user else None,
        )
    _SPAWNED[proc.pid] = proc
    return proc.pid


def _group_of(user: str | None) -> str | int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (reaping it first if it is our exited child)."""
    proc = _SPAWNED.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An exited process whose parent (often init, for detached servers) has not reaped it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


def looks_like(pid: int, binary: str | None) -> bool:
    """Guard against pid reuse: where /proc exists, the command must name the binary."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if binary is None or not cmdline.parent.exists():
        return True
    try:
        argv0 = cmdline.read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    # Redis rewrites its title to "/path/redis-server 127.0.0.1:PORT".
    words = argv0.split()
    return bool(words) and Path(words[0]).name == Path(binary).name


def stop(pid: int, *, grace_s: float = 10.0, soften: signal.Signals | None = None) -> None:
    """SIGTERM, then (optionally) ``soften`` after a moment, then SIGKILL at the end of grace."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    soften_at = time.monotonic() + min(2.0, grace_s / 2)
    softened = soften is None
    while time.monotonic() < deadline:
        if not alive(pid):
            _SPAWNED.pop(pid, None)
            return
        if not softened and time.monotonic() >= soften_at and soften is not None:
            _signal(pid, soften)
            softened = True
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    for _ in range(100):
        if not alive(pid):
            _SPAWNED.pop(pid, None)
            return
        time.sleep(0.05)
    raise DevstackError(f"process {pid} survived SIGKILL")


def kill(pid: int, sig: signal.Signals, *, grace_s: float = 10.0) -> None:
    """Send ``sig`` (e.g. SIGKILL, or Postgres's SIGQUIT) and wait until ``pid`` is gone."""
    _signal(pid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(pid):
            _SPAWNED.pop(pid, None)
            return
        time.sleep(0.02)
    stop(pid, grace_s=0.0)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_until(
    ready: Callable[[], bool], pid: int, log_file: Path, timeout_s: float, what: str
) -> None:
    """Poll ``ready()`` until true; fail early with the log's tail if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive(pid):
            raise DevstackError(f"{what} exited during start-up:\n{tail(log_file)}")
        time.sleep(0.1)
    stop(pid, grace_s=3.0)
    raise DevstackError(f"{what} did not answer within {timeout_s:.0f}s:\n{tail(log_file)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
