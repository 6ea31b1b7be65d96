"""``kodo oc up|health|down`` run the real daemon isolated, and stop only what they started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.oc_daemon import daemon
from devstack.oc_daemon.config import AGENT_STEPS, global_config, scripted_provider
from devstack.supervisor import alive, free_port
from shared.opencode.client import MAX_TURN_STEPS
from tests.conformance.conftest import PASSWORD

pytestmark = pytest.mark.conformance

KODO = str(Path(sys.executable).parent / "kodo")


def _kodo(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KODO_OC_STATE_DIR": str(state_dir),
        "KODO_WORKSPACE_DIR": str(state_dir / "workspaces"),
    }
    return subprocess.run(
        [KODO, "oc", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_daemon_environment_turns_every_switch_on_and_drops_inherited_settings(
    tmp_path: Path,
) -> None:
    env = daemon.daemon_env(
        {
            "PATH": "/bin",
            "OPENCODE_PERMISSION": '{"bash":"allow"}',
            "XDG_CONFIG_HOME": "/x",
            "DATABASE_URL": "postgresql://kodo:secret@db/kodo",
            "KODO_API_TOKEN": "kodo_secret",
        },
        home=tmp_path,
        config_path=tmp_path / "c.json",
        password=PASSWORD,
    )
    assert {k: env[k] for k in daemon.DISABLE_SWITCHES} == dict.fromkeys(
        daemon.DISABLE_SWITCHES, "1"
    )
    assert env["OPENCODE_DISABLE_AUTOCOMPACT"] == "1", "no synthetic message inside a turn"
    assert "OPENCODE_PERMISSION" not in env
    assert set(env) & {"DATABASE_URL", "KODO_API_TOKEN"} == set(), "an allowlist, not a denylist"
    assert env["PATH"] == "/bin"
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / ".config")
    assert (env["HOME"], env["OPENCODE_SERVER_PASSWORD"]) == (str(tmp_path), PASSWORD)


def test_the_global_config_denies_what_a_headless_call_must_never_do() -> None:
    config = global_config(scripted_provider("http://127.0.0.1:1/v1"))
    model = config["provider"]["kodo"]["models"]["kodo-scripted"]
    assert model["tool_call"] is True
    assert model["cost"] == {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 0}
    assert set(config["permission"].values()) == {"deny"}
    assert config["agent"]["plan"]["permission"] == {"edit": "deny", "bash": "deny", "task": "deny"}
    steps = {name: agent["steps"] for name, agent in config["agent"].items()}
    assert steps == {"plan": AGENT_STEPS, "build": AGENT_STEPS}
    assert AGENT_STEPS < MAX_TURN_STEPS - 1, "a capped turn is still read whole"
    assert (config["snapshot"], config["lsp"], config["share"]) == (False, False, "disabled")
    assert config["compaction"] == {"auto": False}, "no synthetic message inside a turn"


def test_up_health_down_start_probe_and_stop_the_daemon(
    opencode_binary: Path, tmp_path: Path
) -> None:
    port = free_port()
    up = _kodo("up", "--port", str(port), "--scripted-llm", state_dir=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    state = daemon.read_state(tmp_path)
    assert state is not None
    try:
        assert state.sandboxed, "`kodo oc up` sandboxes the daemon by default"
        assert state.url == f"http://127.0.0.1:{port}"
        assert f"OC_BASE_URL={state.url}" in up.stdout
        healthy = _kodo("health", state_dir=tmp_path)
        assert healthy.returncode == 0, healthy.stderr
        assert json.loads(healthy.stdout) == {"healthy": True, "version": "1.18.33"}
        assert state.start_ticks is not None
        assert state.llm_start_ticks is not None
        assert alive(state.pid, state.start_ticks)
        assert state.llm_pid is not None
        assert alive(state.llm_pid, state.llm_start_ticks)
    finally:
        down = _kodo("down", state_dir=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not alive(state.pid)
    assert _group_members(state.pid) == [], "the sandbox's init and the daemon under it too"
    assert state.llm_pid is not None
    assert not alive(state.llm_pid)
    assert _kodo("health", state_dir=tmp_path).returncode != 0


def _group_members(pgid: int) -> list[str]:
    """Processes still in the process group ``pgid`` (the sandbox's outer bubblewrap leads
    it; its PID-namespace init ignores SIGTERM, so only the whole group's end counts)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(proc.name)
    return found
