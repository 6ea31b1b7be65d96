"""`kodo up` says what it started, with what model and what to type next, and a second
`kodo up` on a running stack starts nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services.cli import upstate
from tests.integration.cli.conftest import KODO, Kodo

pytestmark = pytest.mark.integration


def test_up_prints_the_model_and_the_next_steps_with_an_approvers_token(kodo: Kodo) -> None:
    said = kodo.up_output

    assert "model:    " in said
    assert "next:" in said
    assert f"kodo intent submit --repo {kodo.repo_root}/REPO" in said
    assert "kodo run approve RUN_ID --token TOKEN" in said
    assert "WARNING: no repository root" not in said


def test_a_second_up_on_a_running_stack_starts_nothing_and_says_so(kodo: Kodo) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OC_BASE_URL"}
    env.update({k: v for k, v in kodo.env.items() if v is not None})
    before = upstate.load(kodo.home)

    again = subprocess.run(
        [str(KODO), "up", "--home", str(kodo.home), "--api-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"kodo is already up (API {kodo.state.api_url}): nothing started" in again.stdout
    assert upstate.load(kodo.home) == before, "the state file is left as it was"


def _processes_with(variable: str, value: str) -> list[int]:
    """The processes whose environment has ``variable=value``."""
    found = []
    needle = f"{variable}={value}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in environ:
                found.append(int(entry))
    return found


def test_an_up_whose_api_cannot_start_stops_every_process_it_started(
    kodo: Kodo, tmp_path: Path
) -> None:
    """The worker, beat, collector, API and Flower start together: one of them failing
    fails `up` only once the others' starts ended, and none of them is left running."""
    home = tmp_path / "broken-home"
    workspaces = str(home / "workspaces")
    env = {k: v for k, v in os.environ.items() if k != "OC_BASE_URL"}
    env.update({k: v for k, v in kodo.env.items() if v is not None})
    env.update({"GUNICORN_CMD_ARGS": "--no-such-option", "KODO_WORKSPACE_DIR": workspaces})

    ports = ["--api-port", "0", "--oc-port", "0", "--flower-port", "0"]
    up = subprocess.run(
        [str(KODO), "up", "--home", str(home), *ports, "--repo-root", str(kodo.repo_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert up.returncode != 0, up.stdout
    assert "kodo up failed, stopped what it started: api exited early" in up.stderr, up.stderr
    assert upstate.load(home) is None, "nothing was recorded as up"
    assert _processes_with("KODO_WORKSPACE_DIR", workspaces) == []
