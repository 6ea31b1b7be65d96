"""``machine_cpu_ms``: what a phase cost the whole machine, processes no one reaps too."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.stats import BusySampler, machine_cpu_ms

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


def test_the_busy_share_counts_the_seconds_at_or_above_it() -> None:
    sampler = BusySampler()
    assert sampler.share_at_least(0.9) is None, "no second sampled: no figure"
    sampler.shares = [1.0, 0.95, 0.9, 0.4]
    assert sampler.share_at_least(0.9) == 0.75


def test_a_machine_kept_busy_shows_busy_seconds() -> None:
    """Every core burning: the samples taken meanwhile say so (other load only adds)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN.replace("0.3", "2.5")])
        for _ in range(os.cpu_count() or 1)
    ]
    time.sleep(0.3)  # the burners are running
    with BusySampler(interval_s=0.5) as sampler:
        time.sleep(1.6)
    for burner in burners:
        burner.wait()
    assert sampler.shares, "sampled every half second"
    assert max(sampler.shares) >= 0.9, sampler.shares
