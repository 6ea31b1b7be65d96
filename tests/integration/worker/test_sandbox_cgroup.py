"""The sandbox's cgroup: memory (shared memory and /tmp included) and processes bounded
for the whole command, the child cgroup gone afterwards, and its absence said out loud."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from services.worker.sandbox import Finished, cgroup, sandbox_of
from services.worker.sandbox.cgroup import CgroupUnavailable, ExecCgroup
from services.worker.sandbox.cgroup import create as create_cgroup
from services.worker.sandbox.cgroup_plan import Owner, join_argv, locate
from services.worker.steps.base import run_step
from services.worker.steps.execute import execute_step
from shared.config import Settings
from shared.domain.run_machine import StepId
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, diagnostic, uow
from tests.integration.worker.test_execute_step import (
    decided,
    executing_in_background,
    step_output,
)
from tests.integration.worker.test_sandbox import processes_with, run_python, said, worktree  # noqa: F401
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

LIMIT = 128 << 20
NO_CGROUP = sandbox_of(Settings(), dict(os.environ)).cgroup_unavailable()
needs_cgroup = pytest.mark.skipif(NO_CGROUP is not None, reason=f"no cgroup here: {NO_CGROUP}")


def exec_children(label: str) -> set[Path]:
    """The child cgroups of executions labelled ``label`` (a run id; a test's own tag)
    that exist now, in every hierarchy kodo uses. Only this test's: other test sessions
    on the host (another xdist worker's stacks) run commands of their own meanwhile."""
    places = locate(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())
    return {c for h in places for c in Path(h.directory).glob(f"kodo-exec-{label}-*")}


def own_label() -> str:
    return f"t{secrets.token_hex(6)}"


def held_mb(done: Finished) -> int:
    """The last ``HELD n`` line the command managed to print (MB it held at that point)."""
    lines = [ln for ln in said(done).splitlines() if ln.startswith("HELD ")]
    return int(lines[-1].split()[1]) if lines else 0


TMP_AND_MEMFD = """
import os
chunk, held = b"\\1" * (1 << 20), 0
for name in ("a", "b"):  # each file below RLIMIT_FSIZE, 100 MB of tmpfs in all
    with open("/tmp/fill-" + name, "wb") as tmp:
        for _ in range(50):
            tmp.write(chunk); tmp.flush(); held += 1
            print("HELD", held, flush=True)
fds = []
for _ in range(8):
    fd = os.memfd_create("x"); fds.append(fd)
    for _ in range(25):
        os.write(fd, chunk); held += 1
        print("HELD", held, flush=True)
print("SURVIVED")
"""


@needs_cgroup
def test_tmpfs_and_memfds_together_stay_within_the_memory_limit(worktree: Path) -> None:  # noqa: F811
    settings = Settings(
        exec_memory_bytes=LIMIT, exec_fsize_bytes=64 << 20, exec_tmp_bytes=256 << 20
    )
    done = run_python(TMP_AND_MEMFD, worktree, settings=settings)
    assert "SURVIVED" not in said(done)
    assert held_mb(done) << 20 <= LIMIT, f"held {held_mb(done)} MB under a 128 MB limit"
    assert done.oom_killed, done.memory_cgroup


@needs_cgroup
def test_an_oom_killed_command_fails_the_step_with_the_memory_reason(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(exec_memory_bytes=LIMIT, exec_fsize_bytes=64 << 20)
    hog = (  # memfds of 32 MB each (below RLIMIT_FSIZE), kept open, without end
        "import os\nfds = []\nwhile True:\n    fds.append(os.memfd_create('x'))\n"
        "    for _ in range(32): os.write(fds[-1], b'1' * (1 << 20))"
    )
    run_id = decided(rt, repo, ["python3", "-c", hog])
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    assert "verification killed: memory limit" in diagnostic(rt, run_id)["error"]
    report = step_output(rt, run_id)["memory_cgroup"]
    assert report["oom_kills"] >= 1
    assert report["limit_bytes"] == LIMIT
    assert exec_children(run_id) == set()


FORKS = """
import os, time
made = 0
try:
    for _ in range(60):
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        made += 1
except OSError as exc:
    print("STOPPED", exc)
print("FORKED", made, flush=True)
"""


@needs_cgroup
def test_the_process_count_is_bounded_by_the_cgroup(worktree: Path) -> None:  # noqa: F811
    done = run_python(FORKS, worktree, settings=Settings(exec_nproc=16), timeout_s=20)
    assert "STOPPED" in said(done), said(done)
    forked = int(said(done).split("FORKED", 1)[1].split()[0])
    assert forked < 16
    assert isinstance(done.memory_cgroup, dict)
    assert done.memory_cgroup["pids_max"] == 16
    assert done.memory_cgroup["pids_max_hits"] >= 1, "the cgroup, not only RLIMIT_NPROC, said no"


@needs_cgroup
def test_the_child_cgroup_is_gone_after_an_exit_and_after_a_timeout(worktree: Path) -> None:  # noqa: F811
    label = own_label()
    done = run_python("print('hi')", worktree, label=label)
    assert said(done).strip() == "hi"
    assert isinstance(done.memory_cgroup, dict)
    assert exec_children(label) == set()
    started = time.monotonic()
    slow = run_python(
        "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)",
        worktree,
        timeout_s=2,
        label=label,
    )
    assert slow.timed_out
    assert time.monotonic() - started < 15
    assert exec_children(label) == set()


@needs_cgroup
def test_the_child_cgroup_is_gone_after_a_cancel(rt: Runtime, repo: Path) -> None:
    tag = f"{3000 + time.time_ns() % 1000}.555"
    run_id, worker, result = executing_in_background(rt, repo, tag)
    children = exec_children(run_id)
    assert children, "the command runs in a child cgroup"

    def members() -> set[int]:  # the tag shows in the shim's argv before it joins
        return {
            int(p) for c in exec_children(run_id) for p in (c / "cgroup.procs").read_text().split()
        }

    wait_until(members, 10, "the sandbox's processes to be in the child cgroup")
    assert os.getpid() not in members(), "the worker itself never joins the child"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    worker.join(20)
    assert result == ["superseded"]
    assert exec_children(run_id) == set()
    assert processes_with(tag) == []


def _made_with_a_sleep(label: str, marker: str) -> tuple[ExecCgroup, subprocess.Popen[bytes]]:
    """An execution cgroup made as a worker makes one, a ``sleep`` joined to it as the
    sandbox joins (the shim), as if a command still ran there."""
    made = create_cgroup(label, LIMIT, 64)
    sleep = subprocess.Popen(join_argv(made.procs_files, ["sleep", marker]))
    wait_until(lambda: made.pids() != [], 10, "the sleep to join its cgroup")
    return made, sleep


@needs_cgroup
def test_a_killed_workers_execution_cgroup_is_swept_and_a_live_ones_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker SIGKILLed mid-command left its execution's cgroup, and the command in it.
    The next worker's start-up sweep kills and removes that one, whose maker's pid no
    longer runs; it leaves alone one whose maker lives (here: this test process), as
    every other worker's on the host."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the killed worker
    me = cgroup.this_process()
    label = own_label()
    tag = time.time_ns() % 1000
    orphan_marker, live_marker = f"{4000 + tag}.7", f"{5000 + tag}.8"
    with monkeypatch.context() as patched:
        patched.setattr(cgroup, "this_process", lambda: Owner(me.pid_ns, gone.pid, me.ticks))
        orphan, orphans_sleep = _made_with_a_sleep(label, orphan_marker)
    live, lives_sleep = _made_with_a_sleep(label, live_marker)  # made by this process
    try:
        assert len(exec_children(label)) == 2 * len(orphan.directories)

        swept = cgroup.sweep_orphans()

        assert orphan.directories[0].name in swept
        assert live.directories[0].name not in swept
        assert exec_children(label) == set(live.directories)
        assert orphans_sleep.wait(5) == -9, "the orphan's command was killed"
        assert lives_sleep.poll() is None, "the live worker's command runs on"
    finally:
        live.destroy()
        for sleep in (orphans_sleep, lives_sleep):
            sleep.kill()
            sleep.wait()


def test_without_a_cgroup_auto_still_runs_and_records_why(worktree: Path, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(sandbox_cgroup_mounts=tmp_path / "no-cgroups-here")
    done = run_python("print('ran')", worktree, settings=settings)
    assert said(done).strip() == "ran"
    assert isinstance(done.memory_cgroup, str)
    assert done.memory_cgroup.startswith("unavailable: no cgroup memory controller")


def test_without_a_cgroup_required_refuses_and_names_the_rule(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    rt = make_rt(sandbox_cgroup="required", sandbox_cgroup_mounts=tmp_path / "no-cgroups-here")
    probe = "open('ran.txt', 'w').write('x')"
    run_id = decided(rt, repo, ["python3", "-c", probe])
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "sandbox_cgroup"
    assert report["error"].startswith("sandbox_cgroup: no cgroup memory controller")
    assert not (rt.settings.workspace_dir / run_id / "ran.txt").exists()
    box = sandbox_of(rt.settings, dict(os.environ))
    with pytest.raises(CgroupUnavailable):
        box.run(["/usr/bin/true"], tmp_path, timeout_s=10, cap=100, protected=())


def test_off_never_makes_a_cgroup(worktree: Path) -> None:  # noqa: F811
    label = own_label()
    done = run_python(
        "print('ran')", worktree, settings=Settings(sandbox_cgroup="off"), label=label
    )
    assert said(done).strip() == "ran"
    assert done.memory_cgroup == "off"
    assert NO_CGROUP is not None or exec_children(label) == set()


SPIN_TWO = """
import os, time
end = time.monotonic() + 1.5
pids = [os.fork() for _ in range(2)]
while time.monotonic() < end:
    pass
if 0 in pids:
    os._exit(0)
for pid in pids:
    os.waitpid(pid, 0)
print("CPU", os.times().children_user + os.times().user, flush=True)
"""


@needs_cgroup
def test_the_cpu_time_is_bounded_by_the_cgroups_quota(worktree: Path) -> None:  # noqa: F811
    """Two spinning processes for 1.5 s of wall, held to half a CPU: well under the 3 s of
    CPU they would take unbounded (red-team helper-130)."""
    if not Path("/sys/fs/cgroup/cpu,cpuacct").is_dir() and not Path("/sys/fs/cgroup/cpu").is_dir():
        pytest.skip("no cgroup v1 cpu hierarchy on this host")
    done = run_python(SPIN_TWO, worktree, settings=Settings(exec_cpus=0.5), timeout_s=20)
    assert isinstance(done.memory_cgroup, dict)
    assert done.memory_cgroup["cpu_max_millicpus"] == 500
    used = float(said(done).split("CPU", 1)[1].split()[0])
    assert used < 1.5, f"{used:.2f} s of CPU in 1.5 s of wall under a quota of half a CPU"
