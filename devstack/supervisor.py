"""The one process supervisor of the local runtime: ports, spawn, liveness, stop.

Every local process (Postgres, Redis, the OpenCode daemon and its scripted LLM, and
kodo's own: oc-compat, worker, beat, API, Flower) is started by :func:`spawn`: its own
session (so it outlives the command that started it and leads a process group), stdin
closed, output appended to a log only its owner may read. A pid written to a state
file is trusted again only by :func:`alive` with the start time recorded next to it
(:func:`start_ticks`), so a reused pid is never signalled. :func:`stop` sends SIGTERM,
then SIGKILL at the end of the grace period, to the group (kodo's processes, with their
gunicorn or celery children) or to the process alone (a server that signals its own
children, like Postgres's postmaster).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Literal

from devstack.handle import DevstackError

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({"", "127.0.0.1", "localhost", "::1"})

Outcome = Literal["already gone", "stopped", "killed after grace", "survived SIGKILL"]
SURVIVED: Outcome = "survived SIGKILL"

# Popen objects for processes this process spawned: kept referenced so they are
# reaped (not left as zombies that still look alive) and never garbage-collected
# while running.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}

SignalHandler = Callable[[int, FrameType | None], object]
_held = 0  # depth of signals_held() blocks (signal handlers run in the main thread)
_pending: list[Callable[[], object]] = []


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Run a :func:`holdable` handler only once the block ends: a process started and
    registered inside it (``Stack.start``) is never lost to a SIGTERM that raises
    between its start and its registration, and so is stopped with the rest."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            run = _pending[0]
            _pending.clear()
            run()


def holdable(handler: SignalHandler) -> SignalHandler:
    """``handler``, put off while a :func:`signals_held` block runs."""

    def held_or_run(signum: int, frame: FrameType | None) -> object:
        if _held:
            _pending.append(lambda: handler(signum, frame))
            return None
        return handler(signum, frame)

    return held_or_run


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


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class Child:
    """A process :func:`spawn` started: its name, its Popen, its log, its start time, and
    the log's size when it started (``log_offset``: logs are appended to, so what an
    earlier process wrote is not this one's)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ticks: int | None
    log_offset: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def log_since_start(self) -> str:
        """What this process (not an earlier one under the same log) has written."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> Outcome:
        """SIGTERM its group, SIGKILL after ``grace_s``."""
        return stop(self.pid, grace_s=grace_s)

    def kill(self) -> Outcome:
        """SIGKILL its group at once: a crash, with no shutdown work."""
        return stop(self.pid, grace_s=5.0, first=signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Child:
    """Start ``argv`` in its own session, output to ``log_path``, detached from our stdio.

    Detaching matters: ``eval "$(kodo stack up --env)"`` would otherwise wait for the
    process to close the pipe. ``user`` (when we are root) runs it unprivileged.
    """
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with private_log(log_path) as log:
        offset = os.fstat(log.fileno()).st_size
        popen = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=_group_of(user),
            extra_groups=[] if user else None,
        )
    _SPAWNED[popen.pid] = popen
    return Child(name, popen, log_path, start_ticks(popen.pid), offset)


def _group_of(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc), to recognise it later despite pid reuse."""
    fields = _stat_fields(pid)
    # fields[0] is the state (field 3 of stat); starttime is field 22.
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def _stat_fields(pid: int) -> list[str]:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat_line.rpartition(")")[2].split()


def alive(pid: int, ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, given ``ticks``, is the process started then.

    Our own exited child is reaped on the way; a detached server's zombie (its parent,
    often init, has not reaped it yet) counts as gone.
    """
    if pid <= 0:  # 0 and -1 would name our own group, or every process
        return False
    proc = _SPAWNED.get(pid)
    if proc is not None:
        # Our own child: waitpid alone decides. A later look at /proc could see it die
        # after the poll, call it gone and leave it unreaped (a zombie, and a "still
        # running" ResourceWarning from its Popen at exit).
        if proc.poll() is not None:
            _SPAWNED.pop(pid, None)
            return False
        return ticks is None or start_ticks(pid) == ticks
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process (Postgres run as another user): it exists
    if _stat_fields(pid)[:1] in (["Z"], ["X"]):
        return False
    return ticks is None or start_ticks(pid) == ticks


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


def stop(
    pid: int,
    *,
    grace_s: float = 10.0,
    group: bool = True,
    soften: signal.Signals | None = None,
    first: signal.Signals = signal.SIGTERM,
) -> Outcome:
    """Send ``first`` (SIGTERM), then ``soften`` after a moment (if given), then SIGKILL at
    the end of ``grace_s``; wait until ``pid`` is gone and say how it went.

    ``group`` signals the process group ``pid`` leads (every spawned process leads one);
    without it only ``pid`` is signalled, for a server that stops its own children.
    """

    def running() -> bool:
        return alive(pid) or (group and _group_lives(pid))

    if not running():
        return "already gone"
    _send(pid, first, group)
    deadline = time.monotonic() + grace_s
    soften_at = time.monotonic() + min(2.0, grace_s / 2)
    while time.monotonic() < deadline:
        if not running():
            return "stopped"
        if soften is not None and time.monotonic() >= soften_at:
            _send(pid, soften, group)
            soften = None
        time.sleep(0.05)
    if not running():
        return "stopped"
    _send(pid, signal.SIGKILL, group)
    for _ in range(100):
        if not running():
            return "killed after grace"
        time.sleep(0.05)
    return SURVIVED


def stop_all(pids: Sequence[int], *, grace_s: float = 10.0) -> list[Outcome]:
    """:func:`stop` each of ``pids`` at once, each with its own ``grace_s``; their
    outcomes, in order. A stack's processes take 1-4 s each to finish shutting down:
    stopped one after another, six of them kept ``kodo down`` waiting 17.7 s, stopped
    together 6.0 s (both including the CLI's own start). Nothing depends on the order:
    each process recovers its work from Postgres when started."""
    with ThreadPoolExecutor(max_workers=max(1, len(pids)), thread_name_prefix="stop") as pool:
        return list(pool.map(lambda pid: stop(pid, grace_s=grace_s), pids))


def _group_lives(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` leads still runs (the leader may be gone:
    a sandbox's outer bubblewrap dies on SIGTERM while its PID-namespace init, which
    ignores SIGTERM, and the daemon under it live on)."""
    if pgid <= 0:  # 0 is our own group; never probe, let alone signal, it
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _send(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            try:
                os.killpg(pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                pass  # not a group leader, or a member is not ours: the process alone
        os.kill(pid, sig)


def wait_until(ready: Callable[[], bool], child: Child, timeout_s: float, what: str) -> None:
    """Poll ``ready()`` until true; fail early with the log's tail if the process died,
    and stop it if it never answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive(child.pid):
            raise DevstackError(
                f"{what} exited ({child.popen.returncode}) during start-up:\n{child.log_tail()}"
            )
        time.sleep(0.1)
    stop(child.pid, grace_s=3.0)
    raise DevstackError(f"{what} did not answer within {timeout_s:.0f}s:\n{child.log_tail()}")
