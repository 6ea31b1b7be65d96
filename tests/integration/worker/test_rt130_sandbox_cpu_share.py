"""A verification command cannot starve the host's CPU (red-team helper-130).

The sandbox bounds a command's memory and processes (its cgroup), each process's CPU
seconds (RLIMIT_CPU) and the wall clock (KODO_EXEC_TIMEOUT_S), but not its share of the
CPU: its processes run at the worker's own priority (nice 0, SCHED_OTHER, every core,
no ``cpu`` controller). A hostile test suite forks up to ``KODO_EXEC_NPROC`` (256)
spinning processes for the whole timeout (120 s): every other process on the host, the
worker's lease heartbeats, Postgres, the API and other runs' verifications (whose own
wall-clock timeout keeps running), gets 2/257 of this 2-core machine in the meantime.

The kernel's autogroup scheduling (``kernel.sched_autogroup_enabled=1`` here) groups a
session's processes as one scheduling entity, and bubblewrap's ``--new-session`` gives
the sandbox a session of its own: 32 spinners in one session left a host process 2.8 s
of CPU in 3 s. But ``setsid()`` is the command's to call, and each call makes a new
autogroup: 32 spinners each in a session of its own leave the host process 0.31 s of CPU in 3 s
(measured); a host with autogroup off (many servers, systemd services) has no bound at
all.

Safe outcome: the execution's cgroup bounds its CPU too (the ``cpu`` controller:
v2 ``cpu.max``/``cpu.weight``, v1 ``cpu.cfs_quota_us``/``cpu.shares``), so a host process
competing with it keeps most of a core. (nice 19 or SCHED_IDLE on the first process is
not enough under autogroup: a new session's autogroup starts at nice 0 again.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.config import Settings
from tests.integration.worker.test_sandbox import run_python, said, worktree  # noqa: F401

pytestmark = pytest.mark.integration

SPIN_S = 4.0
SPINNERS = 32

SPIN = f"""
import os, time
end = time.monotonic() + {SPIN_S}
kids = []
for _ in range({SPINNERS}):
    pid = os.fork()
    if pid == 0:
        os.setsid()  # a session of its own: an autogroup of its own
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print("SPUN", len(kids), flush=True)
"""

HOST_SPIN = f"""
import time
start = time.monotonic()
while time.monotonic() - start < {SPIN_S - 1.0}:
    pass
print(time.process_time())
"""


def test_a_commands_spinning_processes_leave_the_host_most_of_a_core(
    worktree: Path,  # noqa: F811
) -> None:
    box: dict[str, object] = {}

    def sandboxed() -> None:
        box["done"] = run_python(SPIN, worktree, settings=Settings(exec_nproc=64), timeout_s=60)

    spinner = threading.Thread(target=sandboxed)
    spinner.start()
    time.sleep(0.8)  # the sandbox is up and its spinners are running
    host = subprocess.run(
        [sys.executable, "-c", HOST_SPIN], capture_output=True, text=True, check=True
    )
    spinner.join(timeout=90)
    got = float(host.stdout.strip())
    wall = SPIN_S - 1.0
    assert "SPUN" in said(box["done"]), said(box["done"])  # type: ignore[arg-type]
    assert got >= wall / 2, (
        f"a host process at normal priority got {got:.2f} s of CPU in {wall:.1f} s of wall"
        f" time while a sandboxed command ran {SPINNERS} spinning processes: the command's"
        " CPU share is unbounded (nice 0, no cpu cgroup)"
    )
