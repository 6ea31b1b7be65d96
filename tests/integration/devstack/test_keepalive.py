"""devstack.keepalive on real processes: a child that dies is started again after a growing
delay, a stop request ends child and wrapper, and a kodo worker killed with SIGKILL (as
kombu's Redis-close crash ends it) comes back and answers over the broker."""

from __future__ import annotations

import ast
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from devstack import keepalive
from devstack.keepalive import RESTART_MARK, wrap
from devstack.kodo_procs import Stack, start_worker, wait_log_line, wait_worker_ready
from devstack.supervisor import Child, alive, spawn, stop
from tests.conftest import own_redis

pytestmark = pytest.mark.integration

# Appends its pid to argv[1] (after ignoring SIGTERM, when argv[3] says "stubborn";
# after starting a grandchild in its group and writing its pid to argv[1].left, when
# "leaves"); exits 3 while fewer than argv[2] pids are there, then stays up.
CHILD = """
import os, signal, subprocess, sys, time
pids, keep_after, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "leaves":
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pids + ".left", "a") as out:
        out.write(f"{left.pid}\\n")
with open(pids, "a") as out:
    out.write(f"{os.getpid()}\\n")
with open(pids) as done:
    if len(done.read().split()) < keep_after:
        sys.exit(3)
time.sleep(600)
"""

FAST = ["--first-delay", "0.05", "--max-delay", "0.2", "--reset-after", "600"]


def until(what: str, ready: Callable[[], bool], deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while not ready():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.05)


def kept(tmp_path: Path, keep_after: int, mode: str = "gentle", *opts: str) -> Child:
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "pids"), str(keep_after), mode]
    wrapper = wrap(argv, "child")
    at = wrapper.index("--")
    wrapper[at:at] = list(opts or FAST)
    return spawn("keepalive", wrapper, tmp_path / "keepalive.log")


def pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def restart_lines(wrapper: Child) -> list[str]:
    return [line for line in wrapper.log_tail(200).splitlines() if RESTART_MARK in line]


def test_a_child_that_exits_is_restarted_with_growing_delays_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    wrapper = kept(tmp_path, keep_after=5)
    until("the fifth child", lambda: len(pids(tmp_path)) == 5 and alive(pids(tmp_path)[-1]))

    started = pids(tmp_path)
    assert len(set(started)) == 5, "each restart is a new process"
    lines = restart_lines(wrapper)
    assert len(lines) == 4, wrapper.log_tail()
    assert all("exited with status 3" in line for line in lines)
    delays = [line.rsplit(" in ", 1)[1] for line in lines]
    assert delays == ["0.05s", "0.1s", "0.2s", "0.2s"], "doubling, up to --max-delay"

    os.kill(wrapper.pid, signal.SIGTERM)  # the wrapper alone: it passes the signal on
    assert wrapper.popen.wait(timeout=30) == 128 + signal.SIGTERM
    until("the last child to exit", lambda: not alive(started[-1]))
    assert len(restart_lines(wrapper)) == 4, "a child asked to stop is not restarted"


def test_kodo_downs_group_stop_ends_wrapper_and_child(tmp_path: Path) -> None:
    wrapper = kept(tmp_path, keep_after=1)
    until("the child", lambda: bool(pids(tmp_path)))
    [child] = pids(tmp_path)
    assert os.getpgid(child) == child, "the child leads its own group: signalled once"

    assert stop(wrapper.pid, grace_s=30) == "stopped"
    assert not alive(child)
    assert restart_lines(wrapper) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_that_ignores_sigterm_is_killed_with_the_wrapper_after_grace(
    tmp_path: Path,
) -> None:
    wrapper = kept(tmp_path, keep_after=1, mode="stubborn")
    until("the child", lambda: bool(pids(tmp_path)))
    [child] = pids(tmp_path)

    assert stop(wrapper.pid, grace_s=1) == "killed after grace"
    until("the stubborn child to be gone", lambda: not alive(child))


def test_what_a_child_leaves_in_its_group_is_killed_when_it_exits(
    tmp_path: Path,
) -> None:
    wrapper = kept(tmp_path, keep_after=2, mode="leaves")
    until("the second child", lambda: len(pids(tmp_path)) == 2)
    first_left = int((tmp_path / "pids.left").read_text().split()[0])

    until("the first child's leftover to be gone", lambda: not alive(first_left))
    assert stop(wrapper.pid, grace_s=30) == "stopped"
    leftovers = [int(pid) for pid in (tmp_path / "pids.left").read_text().split()]
    assert len(leftovers) == 2
    until("every leftover to be gone", lambda: not any(alive(pid) for pid in leftovers))


def test_a_stop_during_the_backoff_ends_the_wrapper_without_a_new_child(tmp_path: Path) -> None:
    wrapper = kept(tmp_path, 2, "gentle", "--first-delay", "600")
    until("the first restart line", lambda: bool(restart_lines(wrapper)))

    assert stop(wrapper.pid, grace_s=30) == "stopped"
    assert wrapper.popen.returncode == 0
    assert len(pids(tmp_path)) == 1, "no child was started after the stop"


def test_a_kept_process_that_exits_during_start_up_fails_its_wait(tmp_path: Path) -> None:
    """``kodo up`` learns of a broken process at once, not at its wait's deadline."""
    stack = Stack(env=dict(os.environ), log_dir=tmp_path, keepalive=True)
    proc = stack.start("broken", [sys.executable, "-c", "raise SystemExit(2)"])
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            wait_log_line(proc, "never printed", what="broken", deadline_s=120)
        assert "exited with status 2" in proc.log_tail()
    finally:
        stack.stop()
    assert not alive(proc.pid)


def worker_pid(celery: Celery, node: str, not_pid: int | None = None) -> int | None:
    """The pid the worker ``node`` reports over the broker, if it answers (and is not
    ``not_pid``)."""
    stats = celery.control.inspect(destination=[node], timeout=2.0).stats() or {}
    pid = stats.get(node, {}).get("pid")
    return pid if isinstance(pid, int) and pid != not_pid else None


def answer(what: str, get: Callable[[], int | None], deadline_s: float = 120.0) -> int:
    """The first non-None value ``get`` returns."""
    end = time.monotonic() + deadline_s
    while (value := get()) is None:
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.1)
    return value


@pytest.mark.timeout(240)
def test_a_worker_killed_by_sigkill_comes_back_and_answers_ping(
    tmp_path: Path, database_url: str
) -> None:
    with own_redis("kodo-keepalive-redis-") as (broker, _home):
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": broker.url}
        stack = Stack(env=env, log_dir=tmp_path, keepalive=True)
        node = f"keepalive-{uuid.uuid4().hex[:8]}@%h"
        named = node.replace("%h", socket.gethostname())
        celery = Celery(broker=broker.url)
        try:
            proc = start_worker(stack, node=node, concurrency=1)
            wait_worker_ready(proc)
            old = answer("the worker's pid", lambda: worker_pid(celery, named))
            assert old != proc.pid, "the worker is the wrapper's child"

            os.kill(old, signal.SIGKILL)

            new = answer("a new worker's pid", lambda: worker_pid(celery, named, not_pid=old))
            assert new != old
            assert alive(proc.pid), "the wrapper, whose pid kodo up records, kept running"
            replies = celery.control.ping(destination=[named], timeout=5.0)
            assert {name for reply in replies for name in reply} == {named}
            [line] = restart_lines(proc)
            assert f"pid {old} exited with signal SIGKILL" in line
        finally:
            celery.close()
            outcomes = [p.stop(grace_s=30) for p in stack.procs]
        assert outcomes == ["stopped"]


def test_a_log_past_its_bound_is_copied_aside_and_every_writer_goes_on_at_its_start(
    tmp_path: Path,
) -> None:
    """The wrapper and its child append to one open file, which kodo up made: rotating
    copies it to LOG.1 (the older ones shifted, the oldest dropped) and truncates it."""
    log = tmp_path / "svc.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    other = os.open(log, os.O_WRONLY | os.O_APPEND)  # another writer of the same file
    try:
        bound = keepalive.LogBound(max_bytes=100, keep=2)
        os.write(fd, b"a" * 60)
        assert keepalive.rotate_if_over(fd, bound) is None, "under the bound"
        for byte in (b"b", b"c", b"d"):
            os.write(other, byte * 100)
            assert keepalive.rotate_if_over(fd, bound) == f"{log}.1"
            assert log.stat().st_size == 0
        os.write(other, b"next\n")
        assert log.read_bytes() == b"next\n", "the writers go on at the start"
        assert Path(f"{log}.1").read_bytes() == b"d" * 100
        assert Path(f"{log}.2").read_bytes() == b"c" * 100
        assert not Path(f"{log}.3").exists(), "two kept"
        assert Path(f"{log}.1").stat().st_mode & 0o777 == 0o600
    finally:
        os.close(fd)
        os.close(other)


def test_a_kept_process_that_talks_a_lot_keeps_its_log_within_the_bound(tmp_path: Path) -> None:
    chatty = [
        sys.executable,
        "-c",
        "import time\nwhile True: print('x' * 99, flush=True); time.sleep(0.002)",
    ]
    wrapper = wrap(chatty, "chatty", keepalive.LogBound(max_bytes=20_000, keep=2, check_s=0.2))
    child = spawn("keepalive", wrapper, tmp_path / "chatty.log")
    try:
        until("two rotations", lambda: (tmp_path / "chatty.log.2").exists(), 30)
        sizes = []
        for _ in range(10):
            sizes.append((tmp_path / "chatty.log").stat().st_size)
            time.sleep(0.1)
        print(f"\nlog sizes over a second: {sizes}")
        assert max(sizes) < 20_000 + 40_000, "a check period's output past the bound at most"
        assert not (tmp_path / "chatty.log.3").exists()
        assert "x" * 99 in (tmp_path / "chatty.log.1").read_text()
    finally:
        assert stop(child.pid, grace_s=10) == "stopped"


def test_the_wrapper_runs_on_the_standard_library_alone() -> None:
    """``kodo up`` keeps six processes, each behind a wrapper: run as a script without
    site-packages (``-I -S``), one costs about 15 MB of RSS, against 65 MB when it
    imported the devstack package (alembic, SQLAlchemy) on the way."""
    command = wrap(["true"], "x")
    assert command[:4] == [sys.executable, "-I", "-S", keepalive.__file__]
    tree = ast.parse(Path(keepalive.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
