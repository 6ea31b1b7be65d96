"""``kodo run watch --follow`` on a real terminal: through the approval to the end.

The CLI runs as a real process on a pseudo-terminal against the e2e stack (real
oc-compat, worker, beat and API processes); what it writes is fed to pyte, a VT100
emulator. The test approves the plan when the watch says it waits, as a person would
from another terminal, and the same watch goes on to the run's end.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pyte
import pytest

from devstack.kodo_procs import Stack, issue_token
from devstack.sample_repo import create_sample_repo
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e

KODO = Path(sys.executable).parent / "kodo"
COLUMNS, LINES = 160, 60
WAITING = b"waiting for approval: kodo run approve"
DEADLINE_S = 120.0


class Terminal:
    """A process on a pseudo-terminal, read as it writes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            argv, env=env, stdin=follower, stdout=follower, stderr=follower
        )
        os.close(follower)
        self.output = bytearray()

    def read_until(self, wanted: bytes, deadline: float) -> bool:
        """Read until ``wanted`` was written (True), the process closed the pty, or the deadline."""
        while wanted not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: the process closed its side
                return wanted in self.output
            if not chunk:
                return wanted in self.output
            self.output += chunk
        return wanted in self.output

    def finish(self, deadline: float) -> int:
        self.read_until(b"\x00never written\x00", deadline)
        os.close(self.leader)
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def screen(self) -> pyte.Screen:
        screen = pyte.Screen(COLUMNS, LINES)
        pyte.ByteStream(screen).feed(bytes(self.output).replace(b"\n", b"\r\n"))
        return screen


@dataclass(frozen=True)
class Followed:
    """A run watched with --follow from submit to success, and what the watch wrote."""

    run_id: str
    plan_sha256: str
    code: int
    output: bytes
    screen: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def followed(stack: Stack, api: Api, tmp_path_factory: pytest.TempPathFactory) -> Followed:
    """Submit, watch --follow on a pty, approve when it says the plan waits, read to the end."""
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "watch-follow")
    # Each provider call held 1.5 s: a step is running across several of the watch's
    # refreshes, however fast the machine (the elapsed time is drawn only while one runs).
    run_id = api.submit(repo, "Add a multiply function to calc.py with a test [oc:slow=1500]")
    reader = issue_token(stack.env["DATABASE_URL"], "watcher", "approver")
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "COLUMNS": str(COLUMNS),
        "LINES": str(LINES),
        "KODO_API_URL": stack.api_url,
        "KODO_API_TOKEN": reader,
        "KODO_HOME": str(tmp_path_factory.mktemp("home")),
    }
    deadline = time.monotonic() + DEADLINE_S
    terminal = Terminal(
        [str(KODO), "run", "watch", run_id, "--follow", "--timeout", str(DEADLINE_S)], env
    )
    assert terminal.read_until(WAITING, deadline), terminal.output.decode(errors="replace")
    plan = api.http.get(f"/runs/{run_id}/plan").json()
    approved = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"plan_sha256": plan["planSha256"]},
        headers=api.bearer("alice", "approver"),
    )
    assert approved.status_code == 200, approved.text
    code = terminal.finish(deadline)
    screen = "\n".join(line.rstrip() for line in terminal.screen().display)
    return Followed(run_id, plan["planSha256"], code, bytes(terminal.output), screen, env)


def piped(followed: Followed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KODO), *args],
        env={**followed.env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_watch_follow_goes_through_the_approval_to_the_end_with_a_live_elapsed_time(
    followed: Followed, api: Api
) -> None:
    run_id, text = followed.run_id, followed.screen

    assert followed.code == 0, text
    assert f"Plan card (sha256 {followed.plan_sha256})" in text
    approve = f"kodo run approve {run_id} --plan-sha256 {followed.plan_sha256} --token"
    # wider than the screen: drawn as one line (soft-wrapped), so a copy is one command
    assert approve.encode() in followed.output, "the command names the digest of the card"
    assert f"run {run_id} succeeded" in text, "the same watch saw the run to its end"
    rows = [line.split()[:3] for line in text.splitlines()]
    for step in ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST"):
        assert ["✓", step, "succeeded"] in rows, f"{step} succeeded on the final frame"
    assert b" s so far" in followed.output, "a running step's elapsed time was drawn live"
    assert api.run(run_id)["status"] == "succeeded"


def test_the_finished_run_is_shown_diffed_and_its_output_printed(followed: Followed) -> None:
    shown = piped(followed, "run", "show", followed.run_id)
    diff = piped(followed, "run", "diff", followed.run_id)
    logs = piped(followed, "run", "logs", followed.run_id)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.startswith("decision:   approved by alice at ") for line in lines)
    assert any(line.split()[:2] == ["calc.py", "|"] for line in lines), "the patch's diffstat"
    assert "  exit:     0" in lines
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.startswith("diff --git a/")
    assert "+def multiply(" in diff.stdout
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.startswith("== command-output.txt (sha256 ")
