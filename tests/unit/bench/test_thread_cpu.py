"""``thread_cpu_ms``: a worker's CPU by thread, read from /proc, not sampled.

The bench splits a Celery worker's CPU into its main thread's (the event loop) and the
others' (the steps, threads pool), each in user and kernel time.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from bench.stats import thread_cpu_ms

# A process whose main thread waits while a second thread burns 0.4 s of user CPU; it
# prints its figures before, and after the burn while that thread is still alive.
BURNER = """
import os, threading, time
from bench.stats import thread_cpu_ms

burnt, read = threading.Event(), threading.Event()

def burn():
    end = time.thread_time() + 0.4
    while time.thread_time() < end:
        for _ in range(20000):
            pass
    burnt.set()
    read.wait()  # alive until its figures are read: an ended thread takes them along

before = thread_cpu_ms(os.getpid())
worker = threading.Thread(target=burn)
worker.start()
burnt.wait()
print(before, flush=True)
print(thread_cpu_ms(os.getpid()), flush=True)
read.set()
"""


def test_a_second_threads_cpu_is_not_the_main_threads() -> None:
    said = subprocess.run(
        [sys.executable, "-c", BURNER],
        check=True,
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    samples = [ast.literal_eval(line) for line in said.stdout.splitlines()]
    first_seen, last_seen = samples
    assert last_seen["others_user"] >= 300, "the burning thread's user time is its own"
    main_grew = last_seen["main_user"] - first_seen["main_user"]
    assert main_grew < 100, "the main thread, asleep meanwhile, is not charged for it"


def test_the_figures_split_user_and_kernel_time() -> None:
    mine = thread_cpu_ms(os.getpid())
    assert set(mine) == {"main_user", "main_system", "others_user", "others_system"}
    assert mine["main_user"] > 0


def test_a_process_that_is_gone_has_no_figures() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert thread_cpu_ms(child.pid) == {}
