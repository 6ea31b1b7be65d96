"""When memory runs out, the OOM killer takes the sandboxed command, not the worker
(red-team helper-130).

Each execution's cgroup holds it to ``KODO_EXEC_MEMORY_BYTES`` (4 GiB by default), but
nothing bounds the executions together: a worker runs 8 steps at once (compose's and
the README's ``-c 8``), so 8 hostile runs may hold 32 GiB (this host has 24 GiB, no
swap). And what a command holds in memfds, its ``/tmp`` and its worktree's tmpfs belongs
to no process's RSS: when the host (or the worker's container, or the worker's cgroup)
runs out, the OOM killer ranks processes by RSS and kills the worker, Postgres or any
big process beside them, never the sandbox's small processes that hold the memory. No
``oom_score_adj`` is set on the sandbox.

Measured here, scaled down in a memory cgroup of the test's own (the worker's cgroup
limited to 600 MiB, as a container's would be): a worker holding 300 MiB runs a command
(its execution limit 512 MiB) that writes 320 MiB into memfds; the kernel's OOM killer
kills the worker (SIGKILL), the command survives it.

Safe outcome: the worker survives and the command is the one killed (e.g.
``oom_score_adj`` 1000 on the sandbox's first process, inherited by all of it; and the
worker refusing to start when concurrency x KODO_EXEC_MEMORY_BYTES exceeds the memory it
has, or a cgroup bounding all executions together).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
V1 = Path("/sys/fs/cgroup/memory")

WORKER = """
import os, sys
from pathlib import Path
Path(sys.argv[1], "cgroup.procs").write_text(str(os.getpid()))
ballast = bytearray(300 << 20)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
from services.worker.sandbox import sandbox_of
from shared.config import Settings
settings = Settings(exec_memory_bytes=512 << 20, sandbox_cgroup="required")
box = sandbox_of(settings, dict(os.environ))
tools = box.toolchain(settings.exec_allowlist, ())
wt = Path(sys.argv[2]); wt.mkdir(parents=True, exist_ok=True)
code = '''
import os, time
chunk, fds = b"\\\\1" * (1 << 20), []
for i in range(320):
    if i % 160 == 0:  # (RLIMIT_FSIZE bounds each memfd: two of them)
        fds.append(os.memfd_create("hold"))
    os.write(fds[-1], chunk)
print("HELD", flush=True)
time.sleep(2)
'''
done = box.run([tools.programs["python3"], "-c", code], wt, timeout_s=60, cap=1 << 16,
               protected=(), toolchain=tools, label="rt130-oom")
print("WORKER-ALIVE", done.exit_code, done.oom_killed, flush=True)
"""


def _own_v1_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = V1 / path.lstrip("/")
            return found if found.is_dir() else None
    return None


def _remove(group: Path) -> None:
    for child in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
        if child.is_dir():
            for pid in (child / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
    for child in [
        *sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)),
        group,
    ]:
        for _ in range(100):  # killed processes leave their cgroup a moment later
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a memory cgroup")
def test_the_oom_killer_takes_the_command_not_the_worker(tmp_path: Path) -> None:
    own = _own_v1_memory_cgroup()
    if own is None:
        pytest.skip("no cgroup v1 memory controller of this process's own")
    group = own / f"rt130-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(600 << 20))
        worker = subprocess.run(
            [sys.executable, "-c", WORKER, str(group), str(tmp_path / "ws" / "run-a")],
            cwd=REPO, capture_output=True, text=True, timeout=90,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    finally:
        _remove(group)
    assert worker.returncode == 0, (
        f"the worker died (status {worker.returncode}) while its sandboxed command held"
        " 320 MiB in memfds under its own 512 MiB limit: the OOM killer chose the worker"
        f" (RSS 300 MiB) over the command (no RSS)\nstdout: {worker.stdout[-500:]}\n"
        f"stderr: {worker.stderr[-800:]}"
    )
    assert "WORKER-ALIVE" in worker.stdout, worker.stdout
