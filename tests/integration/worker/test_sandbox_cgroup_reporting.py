"""Without a memory cgroup (KODO_SANDBOX_CGROUP=auto) kodo still runs commands, but says
so: once at worker start, in `kodo doctor` as a warning on a green line; `required` is red."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.cli.doctor import check_sandbox
from services.worker.steps.execute import announce_sandbox
from shared.config import Settings
from tests.integration.worker.test_sandbox_cgroup import NO_CGROUP

pytestmark = pytest.mark.integration


def test_doctor_stays_green_but_warns_when_auto_finds_no_cgroup(tmp_path: Path) -> None:
    check = check_sandbox(Settings(sandbox_cgroup_mounts=tmp_path / "none"))
    assert check.ok
    assert "WARNING: memory cgroup unavailable: no cgroup memory controller" in check.detail
    assert check.data["warning"].startswith("memory cgroup unavailable")


def test_doctor_is_red_when_a_cgroup_is_required_and_there_is_none(tmp_path: Path) -> None:
    settings = Settings(sandbox_cgroup="required", sandbox_cgroup_mounts=tmp_path / "none")
    check = check_sandbox(settings)
    assert not check.ok
    assert check.detail.startswith("sandbox_cgroup: KODO_SANDBOX_CGROUP=required but no cgroup")


@pytest.mark.skipif(NO_CGROUP is not None, reason=f"no cgroup here: {NO_CGROUP}")
def test_doctor_says_commands_run_in_a_cgroup_when_one_can_be_made() -> None:
    check = check_sandbox(Settings(exec_cpus=1.5))
    assert check.ok
    has_cpu = any(Path("/sys/fs/cgroup", d).is_dir() for d in ("cpu,cpuacct", "cpu"))
    if has_cpu:  # (this host's v1 cpu hierarchy: the quota is in force, and said)
        assert "in a memory, pids and cpu cgroup per command (at most 1.5 CPUs)" in check.detail
    else:  # v2: as delegated
        assert "(at most 1.5 CPUs)" in check.detail or "; no CPU quota" in check.detail


def test_worker_start_says_loudly_once_that_there_is_no_cgroup(tmp_path: Path) -> None:
    with capture_logs() as logs:
        announce_sandbox(Settings(sandbox_cgroup_mounts=tmp_path / "none"), dict(os.environ))
    events = [e["event"] for e in logs]
    assert events.count("sandbox.CGROUP_UNAVAILABLE") == 1
    warned = next(e for e in logs if e["event"] == "sandbox.CGROUP_UNAVAILABLE")
    assert warned["log_level"] == "warning"
    assert "rlimits only" in warned["detail"]
