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
v2 ``cpu.max``/``cpu.weight``, v1 ``cpu.cfs_quota_us``/``cpu.shares``): the command's
processes together get no more than its quota (KODO_EXEC_CPUS), and the host keeps the
rest. (nice 19 or SCHED_IDLE on the first process is
not enough under autogroup: a new session's autogroup starts at nice 0 again.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Settings
from tests.integration.worker.test_sandbox import run_python, said, worktree  # noqa: F401

pytestmark = pytest.mark.integration

SPIN_S = 3.0
SPINNERS = 32
QUOTA_CPUS = 1.0

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
times = os.times()
print("SPUN", len(kids), "CPU", times.children_user + times.children_system, flush=True)
"""


def test_a_commands_spinning_processes_use_no_more_than_its_cpu_quota(
    worktree: Path,  # noqa: F811
) -> None:
    """Measured on the command's side (what its processes were given), so the machine's
    other load can only make it pass more easily: a host process's share, measured
    instead, moves with whatever else runs."""
    settings = Settings(exec_nproc=64, exec_cpus=QUOTA_CPUS)
    done = run_python(SPIN, worktree, settings=settings, timeout_s=60)
    shown = said(done)
    assert f"SPUN {SPINNERS}" in shown, shown
    used = float(shown.split("CPU", 1)[1].split()[0])
    allowed = QUOTA_CPUS * SPIN_S * 1.25  # (the kernel's period and the spin's ends)
    assert used <= allowed, (
        f"{SPINNERS} spinning processes, each in a session of its own, used {used:.2f} s of"
        f" CPU in {SPIN_S:.0f} s of wall under a quota of {QUOTA_CPUS:g} CPU: the command's"
        " CPU share is unbounded (nice 0, no cpu cgroup)"
    )
