"""The bench's process tree walk: a process that ends mid-walk is skipped, not fatal."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.stats import descendants


def test_a_process_and_its_children_are_found() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert descendants(os.getpid())[0] == os.getpid()
        assert child.pid in descendants(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_a_process_gone_before_it_is_read_is_skipped() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its /proc entry is gone, as a git child's is once it exits
    assert descendants(gone.pid) == [gone.pid]
