"""The one supervisor: spawn detached, recognise a process by pid and start time, stop it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devstack.supervisor import alive, spawn, start_ticks, stop, stop_all

pytestmark = pytest.mark.integration

# A parent that starts a child in its own group, says both pids, and (optionally)
# ignores SIGTERM; both then wait on stdin-free sleeps until signalled.
FAMILY = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), child.pid, flush=True)
time.sleep(600)
"""


def family(tmp_path: Path, mode: str) -> tuple[int, int, int | None]:
    log = tmp_path / f"{mode}.log"
    child = spawn(mode, [sys.executable, "-c", FAMILY, mode], log)
    while not log.read_text().endswith("\n"):  # the whole line: it may land in pieces
        assert child.alive(), child.log_tail()
        time.sleep(0.01)
    parent, grandchild = (int(x) for x in log.read_text().split())
    assert parent == child.pid
    return parent, grandchild, child.ticks


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` ends within ``within_s`` (a signalled group member dies when it
    is next scheduled, a moment after its leader may have)."""
    end = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_a_pid_is_recognised_only_with_its_start_time(tmp_path: Path) -> None:
    pid, grandchild, ticks = family(tmp_path, "gentle")
    assert ticks is not None
    assert ticks == start_ticks(pid)
    assert alive(pid)
    assert alive(pid, ticks)
    assert not alive(pid, ticks + 1), "the same pid started at another time is another process"
    assert os.getpgid(pid) == pid, "every spawned process leads its own group"
    assert stop(pid, grace_s=10) == "stopped"
    assert not alive(pid)
    assert gone(grandchild), "SIGTERM went to the whole group"
    assert stop(pid) == "already gone"


def test_a_process_that_ignores_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    pid, grandchild, _ = family(tmp_path, "stubborn")
    assert stop(pid, grace_s=0.5) == "killed after grace"
    assert not alive(pid)
    assert gone(grandchild)


def test_stopping_without_the_group_leaves_the_children_to_the_parent(tmp_path: Path) -> None:
    pid, grandchild, _ = family(tmp_path, "gentle")
    try:
        assert stop(pid, grace_s=10, group=False) == "stopped"
        assert alive(grandchild), "only the parent was signalled"
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_pids_that_name_a_group_or_every_process_are_never_alive() -> None:
    assert not alive(0)
    assert not alive(-1)
    assert stop(0) == "already gone"


def test_a_child_reads_only_what_it_wrote_to_a_log_appended_to(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("[earlier worker] celery@host ready.\n")

    child = spawn("worker", [sys.executable, "-c", "print('starting', flush=True)"], log)
    child.popen.wait(timeout=30)

    assert child.log_offset == len("[earlier worker] celery@host ready.\n")
    assert child.log_since_start() == "starting\n"
    assert "ready." in child.log_tail(), "the tail still shows the whole log to a person"


def test_waiting_for_a_worker_is_not_fooled_by_an_earlier_workers_ready_line(
    tmp_path: Path,
) -> None:
    from devstack.kodo_procs import wait_worker_ready

    log = tmp_path / "worker.log"
    log.write_text("[2026-11-30 10:00:00] celery@host ready.\n")  # a previous `kodo up`
    silent = spawn("worker", [sys.executable, "-c", "import time; time.sleep(60)"], log)
    try:
        with pytest.raises(TimeoutError):
            wait_worker_ready(silent, deadline_s=1.0)
    finally:
        stop(silent.pid, grace_s=1)

    ready = spawn("worker", [sys.executable, "-c", SAYS_READY], log)
    try:
        wait_worker_ready(ready, deadline_s=30)
    finally:
        stop(ready.pid, grace_s=1)


SAYS_READY = "import time; time.sleep(0.3); print('celery@host ready.', flush=True); time.sleep(60)"


# Leaves on SIGTERM only once every process of its stack was told to stop (each marks
# its own SIGTERM in a shared folder); a stack stopped one process after another would
# have to SIGKILL the first at the end of its grace.
WAITS_FOR_ITS_STACK = """
import pathlib, signal, sys, time
folder, me, stack = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def told(*_):
    (folder / me).touch()
    while len(list(folder.iterdir())) < stack:
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, told)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_stack_is_stopped_all_at_once_so_no_process_waits_on_another(tmp_path: Path) -> None:
    told = tmp_path / "told"
    told.mkdir()
    children = []
    for name in ("api", "worker", "beat"):
        log = tmp_path / f"{name}.log"
        argv = [sys.executable, "-c", WAITS_FOR_ITS_STACK, str(told), name, "3"]
        children.append(spawn(name, argv, log))
        while "ready" not in log.read_text():
            assert children[-1].alive(), children[-1].log_tail()
    assert stop_all([c.pid for c in children], grace_s=5) == ["stopped"] * 3
    assert sorted(p.name for p in told.iterdir()) == ["api", "beat", "worker"]
    assert not any(alive(c.pid) for c in children)
