"""``machine_cpu_ms``: what a phase cost the whole machine, processes no one reaps too."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.stats import machine_cpu_ms

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
ORPHAN = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
    "print(child.pid, flush=True)\n"  # and exit: init reaps the child, never the bench
)


def test_cpu_of_a_process_the_bench_never_reaps_is_counted() -> None:
    """As a sandboxed command's PID namespace init is reaped by the host's init, not by
    the worker: its CPU is in no kodo process's figures, but the machine spent it."""
    before = machine_cpu_ms()
    said = subprocess.run([sys.executable, "-c", ORPHAN], check=True, capture_output=True)
    orphan = int(said.stdout)
    gone = time.monotonic() + 30
    while os.path.exists(f"/proc/{orphan}/stat") and time.monotonic() < gone:
        time.sleep(0.02)
    assert machine_cpu_ms() - before >= 300 - 20  # clock ticks of 10 ms, rounded down
