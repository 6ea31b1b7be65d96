"""Running a process with its output read in capped chunks, under a deadline.

The worker never holds more than the cap plus one read of a command's output, however
much it writes; a timeout or a failing lease check kills the whole process group.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.domain.ran_tests import TAIL_BYTES


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: killed at the timeout
    head: bytes  # the first ``cap`` bytes of stdout+stderr
    total_bytes: int
    timed_out: bool
    memory_cgroup: dict[str, int] | str = "off"  # usage, or "off" / "unavailable: why"
    tail: bytes = b""  # the last TAIL_BYTES of the output (its runner's summary)

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self.head)

    @property
    def oom_killed(self) -> bool:
        """The cgroup's memory limit killed a process of the command."""
        return isinstance(self.memory_cgroup, dict) and self.memory_cgroup["oom_kills"] > 0


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sandbox's process group: bwrap dies, its PID namespace with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def stream_capped(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    cap: int,
    on_poll: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
    pass_fds: Sequence[int] = (),
    started: Callable[[subprocess.Popen[bytes]], None] = lambda _: None,
    stdin: int | None = None,
) -> Finished:
    """Run ``argv``; keep the first ``cap`` bytes of its output and its last
    :data:`TAIL_BYTES` (where a test runner says what it ran), count and drop the rest.

    ``stdin``: a descriptor the process gets as its standard input (default /dev/null).

    The worker never holds more than ``cap`` bytes plus one read. ``on_poll`` runs every
    ``poll_s`` while the command runs (the step's lease check): if it raises, the
    process group is killed and the exception propagates.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    head = bytearray()
    tail = bytearray()
    total = 0
    timed_out = False
    deadline = time.monotonic() + timeout_s
    next_poll = time.monotonic() + poll_s
    readable = select.poll()  # not select(): a busy worker's descriptors may pass 1023
    readable.register(fd, select.POLLIN)
    try:
        started(proc)
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                kill(proc)
                break
            if now >= next_poll:
                on_poll()
                next_poll = now + poll_s
            wait_ms = max(0, math.ceil((min(deadline, next_poll) - now) * 1000))
            if not readable.poll(wait_ms):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break  # every writer is gone (in a sandbox: its processes are dead)
            total += len(chunk)
            if len(head) < cap:
                head += chunk[: cap - len(head)]
            tail += chunk[-TAIL_BYTES:]
            del tail[:-TAIL_BYTES]
        # Unsandboxed, a command may close its output and run on: the lease is still
        # checked every poll_s and the deadline still holds until it exits.
        while (code := proc.poll()) is None:
            now = time.monotonic()
            if timed_out or now >= deadline:
                timed_out = True
                kill(proc)
                code = proc.wait()
                break
            if now >= next_poll:
                on_poll()
                next_poll = now + poll_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=max(0.0, min(deadline, next_poll) - now))
                break
    except BaseException:
        kill(proc)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    return Finished(None if timed_out else code, bytes(head), total, timed_out, tail=bytes(tail))
