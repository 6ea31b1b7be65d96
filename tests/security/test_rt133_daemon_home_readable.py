"""Red-team helper-133: the OpenCode daemon's database is readable by every local user.

``kodo oc up`` gives the daemon an isolated HOME under its state directory
(``.kodo/oc/home``), where ``opencode serve`` keeps its SQLite database
(``.local/share/opencode/opencode.db`` and its WAL): every session of every run, the
prompts kodo sends (the intent, the plan, file contents the agent read) and the model's
answers and tool outputs. kodo makes the state directory and the HOME with the umask
(0755) and the daemon writes its files 0644, so any local account reads every run's
conversation. kodo keeps ``daemon.json`` and the logs 0600 beside it, but not this.

The spec runs the README's ``kodo oc up --scripted-llm`` (a real, sandboxed ``opencode
serve``) in a state directory others may pass through (as ``.kodo`` is: 0755, and must be
when kodo is root and runs Postgres as ``postgres``), opens a session whose title is a
marker, and has another uid look for the marker.

The safe outcome: the daemon's HOME (or the whole state directory) is 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.oc_daemon import install
from devstack.oc_daemon.install import InstallError
from devstack.supervisor import free_port

pytestmark = pytest.mark.security

OTHER_UID = 65533
MARKER = "rt133-private-session-title"
KODO = Path(sys.executable).parent / "kodo"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid with setpriv")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="kodo-rt133-oc-"))
    base.chmod(0o755)  # like the checkout's .kodo
    try:
        install.install()
    except InstallError as exc:
        pytest.skip(f"no opencode: {exc}")
    state = base / "oc"
    try:
        yield state
    finally:
        subprocess.run(
            [str(KODO), "oc", "down", "--state-dir", str(state)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_the_daemons_sessions_are_not_readable_by_another_local_user(state_dir: Path) -> None:
    workspaces = state_dir.parent / "workspaces"
    argv = [str(KODO), "oc", "up", "--scripted-llm", "--port", str(free_port())]
    up = subprocess.run(
        [*argv, "--state-dir", str(state_dir), "--workspaces", str(workspaces)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr[-2000:]
    recorded = json.loads((state_dir / "daemon.json").read_text())
    made = httpx.post(
        f"{recorded['url']}/session",
        params={"directory": str(workspaces)},
        json={"title": MARKER},
        auth=(recorded["username"], recorded["password"]),
        timeout=30,
    )
    assert made.status_code == 200, made.text[:300]

    data = state_dir / "home" / ".local" / "share" / "opencode"
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    found = subprocess.run(
        [*prefix, "grep", "-ra", "-o", MARKER, str(data)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd="/",
    )
    assert MARKER not in found.stdout, (
        f"uid {OTHER_UID} read a session of the daemon's: {found.stdout.strip()[:300]!r}"
    )
