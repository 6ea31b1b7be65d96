"""`kodo doctor` on a healthy stack (green, exit 0), then red (exit 1) for each failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.supervisor import stop
from tests.integration.cli.conftest import Kodo

pytestmark = pytest.mark.integration

CHECKS = [
    "postgres",
    "redis",
    "migrations",
    "opencode",
    "workers",
    "stuck runs",
    "unknown calls",
    "sandbox",
]


def test_doctor_is_green_with_exit_0_on_a_healthy_stack(kodo: Kodo) -> None:
    result = kodo("doctor")
    print(result.output)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(CHECKS)
    assert all(line.startswith("ok ") for line in lines)
    body = json.loads(kodo("doctor", "--json").output)
    assert body["ok"] is True
    assert [c["name"] for c in body["checks"]] == CHECKS


def test_doctor_says_what_to_do_when_there_is_no_sandbox(
    kodo: Kodo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KODO_SANDBOX_BWRAP", str(tmp_path / "no-bwrap"))
    result = kodo("doctor")
    assert result.exit_code == 1
    assert "FAIL sandbox" in result.output
    assert "apt-get install bubblewrap" in result.output


def test_doctor_says_dead_daemon_when_nothing_listens_on_the_oc_port(kodo: Kodo) -> None:
    result = kodo("doctor", "--oc-url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert "FAIL opencode" in result.output
    assert "dead daemon" in result.output


def test_doctor_says_port_collision_when_something_else_answers(kodo: Kodo) -> None:
    result = kodo("doctor", "--oc-url", kodo.state.api_url)
    assert result.exit_code == 1
    assert "port collision" in result.output


def test_doctor_is_red_with_exit_1_once_the_worker_is_stopped(kodo: Kodo) -> None:
    worker = next(p for p in kodo.state.procs if p.name == "worker")
    assert stop(worker.pid, grace_s=10) in {"stopped", "killed after grace"}
    result = kodo("doctor")
    print(result.output)
    assert result.exit_code == 1
    assert "FAIL workers" in result.output
    assert "no worker answered" in result.output
    assert "ok   postgres" in result.output
