"""Keep one of kodo's long-running processes running: ``python -m devstack.keepalive -- ARGV``.

``kodo up`` starts its processes detached, and nothing else would start one again:
a Celery worker that kombu's Redis-close path kills when Redis restarts (celery/kombu
#582, #659) would stay gone, though Redis is only a transport and the reconciler
re-sends lost work once a worker is back. This wrapper runs ARGV as its child and
starts it again whenever it exits without being asked to, after a bounded exponential
backoff (reset once a run lasted ``--reset-after`` seconds), with one log line each time
naming the exit status.

The child leads a process group of its own, so a stop request reaches it once: ``kodo
down`` records and signals the wrapper's pid and start time (the group
:func:`devstack.supervisor.spawn` made the wrapper lead) as before, and the wrapper
passes SIGTERM or SIGINT on to the child's group, starts nothing more, waits for it and
exits with its status. (In one group, the child would get each signal twice: a Celery
worker shuts down twice, and beat, whose handler raises SystemExit, can die of the
second one mid-exit.) ``kodo down``'s SIGKILL at the end of its grace period reaches
only the wrapper's group, so on Linux the child is made to die with its wrapper
(``PR_SET_PDEATHSIG``); gunicorn's workers leave once their master is gone. And
whatever a child leaves in its group when it exits is killed before the wrapper
restarts it (an old API worker would hold the port) or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

RESTART_MARK = "keepalive: restarting"
"""Starts the log line of each restart: a start-up wait that sees it after its own
spawn knows the process it waited for has exited (see ``devstack.kodo_procs``)."""

POLL_S = 0.1
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LOG_CHECK_S = 5.0
"""How often the wrapper looks at its log's size."""


@dataclass(frozen=True)
class LogBound:
    """The most a log may hold before it is rotated (0: no bound), and how many rotated
    files (``LOG.1`` newest ... ``LOG.keep``) are kept."""

    max_bytes: int = 0
    keep: int = 5
    check_s: float = LOG_CHECK_S


def rotate_if_over(fd: int, bound: LogBound) -> str | None:
    """Rotate the regular file open as ``fd`` once it holds ``bound.max_bytes``; the
    rotated file's path, or None.

    The wrapper and its child share the open file (``kodo up`` opened it for appending
    and handed it on), so it cannot be renamed under them: its content is copied to
    ``LOG.1`` (``LOG.1`` to ``LOG.2``, ... the oldest dropped) and the file is then
    truncated, which every writer's next append follows (logrotate's ``copytruncate``;
    a line written between the copy and the truncation is lost).
    """
    if bound.max_bytes <= 0:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size < bound.max_bytes:
        return None
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")  # Linux; elsewhere logs are not bounded
    except OSError:
        return None
    if not os.path.isabs(path) or path.endswith(" (deleted)"):
        return None
    for n in range(max(1, bound.keep) - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    rotated = f"{path}.1"
    out = os.open(rotated, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # as private as LOG
    with open(path, "rb") as source, os.fdopen(out, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    os.ftruncate(fd, 0)
    return rotated


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: ``first``, doubled after each quick exit up to ``cap``;
    back to ``first`` once a run lasted ``reset_after`` seconds (it was up, not crash-looping)."""

    first: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def next(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.reset_after:
            return self.first
        return min(previous * 2, self.cap)


def describe(returncode: int) -> str:
    """``status 1`` or ``signal SIGKILL``: how a child ended, for the log."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def exit_code(returncode: int) -> int:
    """The shell's convention: a child killed by signal N makes us exit 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Keeper:
    """Runs ``argv`` until asked to stop; the signal handler only records the request."""

    def __init__(
        self, argv: Sequence[str], name: str, backoff: Backoff, log: LogBound = LogBound()
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.backoff = backoff
        self.log = log
        self.stop_signal: signal.Signals | None = None
        self._log_checked = 0.0

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signal.Signals(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        delay: float | None = None
        restarts = 0
        while True:
            began = time.monotonic()
            try:
                child = subprocess.Popen(
                    self.argv, process_group=0, preexec_fn=die_with(os.getpid())
                )
            except OSError as exc:
                self.say(f"cannot start {self.name}: {exc}")
                return 127
            returncode = self.wait(child)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)  # what it left behind, if anything
            if self.stop_signal is not None:
                return exit_code(returncode)
            uptime = time.monotonic() - began
            delay = self.backoff.next(delay, uptime)
            restarts += 1
            self.say(
                f"{RESTART_MARK} {self.name}: pid {child.pid} exited with "
                f"{describe(returncode)} after {uptime:.1f}s; restart {restarts} in {delay:g}s"
            )
            if not self.sleep(delay):
                return 0  # asked to stop while nothing ran

    def wait(self, child: subprocess.Popen[bytes]) -> int:
        """Until the child exits; a stop request is passed on to it once."""
        passed_on = False
        while (returncode := child.poll()) is None:
            if self.stop_signal is not None and not passed_on:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, self.stop_signal)
                passed_on = True
            self.bound_log()
            time.sleep(POLL_S)
        return returncode

    def bound_log(self) -> None:
        """Every LOG_CHECK_S: rotate the log (this wrapper's standard error, the child's
        output too) once it passes its bound."""
        now = time.monotonic()
        if self.log.max_bytes <= 0 or now - self._log_checked < self.log.check_s:
            return
        self._log_checked = now
        try:
            rotated = rotate_if_over(sys.stderr.fileno(), self.log)
        except OSError as exc:
            self.say(f"cannot rotate the log of {self.name}: {exc}")
            return
        if rotated is not None:
            self.say(f"log rotated: the earlier lines are in {rotated}")

    def sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop meanwhile; False when asked."""
        end = time.monotonic() + seconds
        while self.stop_signal is None and time.monotonic() < end:
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))
        return self.stop_signal is None

    def say(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp} [{os.getpid()}] {line}", file=sys.stderr, flush=True)


def die_with(parent: int) -> Callable[[], None] | None:
    """For Popen's ``preexec_fn`` (Linux): the child gets SIGKILL when ``parent`` dies, so a
    wrapper killed at the end of ``kodo down``'s grace period takes its child along."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the line above took effect
            os._exit(1)

    return arm


def wrap(argv: Sequence[str], name: str, log: LogBound = LogBound()) -> list[str]:
    """The command that runs ``argv`` under this wrapper, named ``name`` in its log lines,
    its log rotated past ``log``'s bound.

    The file runs as a script (``-I -S``: no site-packages, no environment, no package):
    it needs only the standard library, and ``-m devstack.keepalive`` would first import
    the devstack package (alembic, SQLAlchemy): 65 MB of RSS per wrapper against 15."""
    bound = [
        *("--log-max-bytes", str(log.max_bytes), "--log-keep", str(log.keep)),
        *("--log-check-s", str(log.check_s)),
    ]
    return [sys.executable, "-I", "-S", __file__, "--name", name, *bound, "--", *argv]


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.keepalive", description=__doc__)
    parser.add_argument("--name", default=None, help="What the log lines call the child.")
    parser.add_argument("--first-delay", type=float, default=Backoff.first)
    parser.add_argument("--max-delay", type=float, default=Backoff.cap)
    parser.add_argument("--reset-after", type=float, default=Backoff.reset_after)
    parser.add_argument(
        "--log-max-bytes", type=int, default=0, help="Rotate the log past this size (0: never)."
    )
    parser.add_argument("--log-keep", type=int, default=LogBound.keep, help="Rotated logs kept.")
    parser.add_argument(
        "--log-check-s", type=float, default=LOG_CHECK_S, help="Size checks' period."
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the command to keep")
    opts = parser.parse_args(args)
    argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
    if not argv:
        parser.error("no command: python -m devstack.keepalive [options] -- ARGV")
    backoff = Backoff(opts.first_delay, opts.max_delay, opts.reset_after)
    log = LogBound(opts.log_max_bytes, opts.log_keep, opts.log_check_s)
    return Keeper(argv, opts.name or os.path.basename(argv[0]), backoff, log).run()


if __name__ == "__main__":
    sys.exit(main())
