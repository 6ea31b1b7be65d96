"""``kodo run watch`` and ``kodo run status`` on a terminal show the plan that was signed.

The CLI runs as a real process on a pseudo-terminal (so rich draws as it would for a
person), against a real API serving a hostile plan; every byte it writes is fed to
pyte, a VT100/xterm emulator, and the assertions read the emulated screen.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime
from pathlib import Path

import pyte
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from devstack.kodo_procs import Stack
from services.cli.views import plan_card_lines
from shared.db.models import PlanApproval, StepRun
from tests.api_process.hostile import (
    FORGED_LINE,
    HOSTILE_PLAN,
    RLO,
    TRUE_PATH,
    VISIBLE_ESCAPES,
    store_hostile_run,
)

pytestmark = pytest.mark.integration

KODO = Path(sys.executable).parent / "kodo"
COLUMNS, LINES = 200, 120


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; its exit code and bytes."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    proc = subprocess.Popen(argv, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every holder of the follower side has closed it
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=60), bytes(out)


def answering_on_terminal(
    argv: list[str], env: dict[str, str], question: bytes, answer: bytes
) -> tuple[int, bytes]:
    """As :func:`on_terminal`, typing ``answer`` once ``question`` is on the screen."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    proc = subprocess.Popen(argv, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = bytearray()
    answered = False
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and question in out:
            os.write(leader, answer)
            answered = True
    os.close(leader)
    return proc.wait(timeout=60), bytes(out)


def screen_of(output: bytes) -> pyte.Screen:
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n"))  # what the tty's ONLCR does for a real screen
    return screen


def cli_env(api_stack: Stack, token: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TERM": "xterm-256color",
        "COLUMNS": str(COLUMNS),
        "LINES": str(LINES),
        "KODO_API_URL": api_stack.api_url,
        "KODO_API_TOKEN": token,
        "KODO_HOME": str(home),
    }


def assert_shows_the_truth(screen: pyte.Screen) -> str:
    text = "\n".join(screen.display)
    assert TRUE_PATH in text, "the path that was signed is on the screen"
    for escape in VISIBLE_ESCAPES:
        assert escape in text, f"{escape} is shown, not obeyed"
    assert RLO not in text
    assert not any(line.startswith(FORGED_LINE) for line in screen.display), "no forged file line"
    assert screen.title == "", "the window title was not set by the plan"
    return text


def test_the_hostile_plan_printed_raw_would_hide_the_path_it_creates() -> None:
    """The attack is real: the same card without escaping shows another plan."""
    raw_file = HOSTILE_PLAN["files"][0]
    raw = (
        f"  file:   {raw_file['change']} {raw_file['path']}  ({raw_file['why']})\n"
        f"  risk:   {HOSTILE_PLAN['risks'][0]}\n"
    ).encode()
    screen = screen_of(raw)
    assert TRUE_PATH not in "\n".join(screen.display)
    assert screen.display[0].startswith(FORGED_LINE)


def test_the_plan_card_lines_alone_show_the_truth_on_a_terminal() -> None:
    card = {"planSha256": "ab" * 32, "plan": HOSTILE_PLAN}
    screen = screen_of("\n".join(plan_card_lines(card)).encode() + b"\n")
    assert_shows_the_truth(screen)


def test_kodo_run_watch_shows_the_signed_path_and_the_escapes_visibly(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    run = store_hostile_run(db)

    code, output = on_terminal(
        [str(KODO), "run", "watch", run.id, "--timeout", "20"],
        cli_env(api_stack, reader_token, home),
    )

    assert code == 0, output.decode(errors="replace")
    assert b"\x1b]0;" not in output, "no OSC sequence of the plan reached the terminal"
    assert b"\x1b]8;;http" not in output
    text = assert_shows_the_truth(screen_of(output))
    assert "Plan card (sha256" in text
    assert "the typo" in text, "the rubbed-out text and its backspaces are both shown"


def test_kodo_run_status_shows_a_hostile_error_escaped(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    run = store_hostile_run(db, error=f"{TRUE_PATH}\r\x1b[2Kall good\x1b]0;done\x07 {RLO}x")

    code, output = on_terminal(
        [str(KODO), "run", "status", run.id], cli_env(api_stack, reader_token, home)
    )

    assert code == 0, output.decode(errors="replace")
    screen = screen_of(output)
    text = "\n".join(screen.display)
    assert f"error: {TRUE_PATH}\\r\\x1b[2Kall good\\x1b]0;done\\x07 \\u202ex" in text
    assert screen.title == ""


def test_an_api_error_quoting_agent_text_is_escaped(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    run = store_hostile_run(db, error=f"{TRUE_PATH}\r\x1b[2Kall good")

    code, output = on_terminal(
        [str(KODO), "run", "watch", run.id, "--timeout", "20"],
        cli_env(api_stack, reader_token, home),
    )

    assert code == 1
    assert f"{TRUE_PATH}\\r\\x1b[2Kall good" in "\n".join(screen_of(output).display)


@pytest.mark.parametrize("answer", [b"y\n", b"n\n"], ids=["confirmed", "declined"])
def test_kodo_run_approve_without_a_digest_shows_the_card_and_approves_only_on_yes(
    api_stack: Stack, reader_token: str, home: Path, db: Session, answer: bytes
) -> None:
    run = store_hostile_run(db)

    code, output = answering_on_terminal(
        [str(KODO), "run", "approve", run.id],
        cli_env(api_stack, reader_token, home),
        b"Approve this plan",
        answer,
    )

    text = assert_shows_the_truth(screen_of(output))
    assert f"Plan card (sha256 {run.plan_sha256})" in text, "the card it asks about"
    assert f"Approve this plan (sha256 {run.plan_sha256})?" in text
    db.expire_all()
    approval = db.scalars(select(PlanApproval).where(PlanApproval.run_id == run.id)).first()
    if answer == b"y\n":
        assert code == 0, text
        assert f"approved plan {run.plan_sha256}" in text
        assert approval is not None
        assert (approval.decision, approval.plan_sha256) == ("approved", run.plan_sha256)
    else:
        assert code == 1, text
        assert "nothing was sent: you did not confirm the plan to approve" in text
        assert approval is None


@pytest.mark.parametrize("answer", [b"y\n", b"n\n"], ids=["confirmed", "declined"])
def test_kodo_run_request_changes_without_a_digest_shows_the_card_and_sends_back_only_on_yes(
    api_stack: Stack, reader_token: str, home: Path, db: Session, answer: bytes
) -> None:
    """A comment is quoted to the plan agent as the review of one plan: without
    --plan-sha256 that plan is shown here and sent back only once its reader confirms it
    (a digest fetched unseen sent back a revision nobody read: red-team helper-103)."""
    run = store_hostile_run(db)
    now = datetime.now(UTC)  # CompileST ended: the run may compile a revision
    db.add(
        StepRun(
            run_id=run.id, step_id="CompileST", status="succeeded", started_at=now, finished_at=now
        )
    )
    db.commit()

    code, output = answering_on_terminal(
        [str(KODO), "run", "request-changes", run.id, "-m", "Keep the rest as it is."],
        cli_env(api_stack, reader_token, home),
        b"Send back this plan",
        answer,
    )

    text = assert_shows_the_truth(screen_of(output))
    assert f"Plan card (sha256 {run.plan_sha256})" in text, "the card it asks about"
    assert f"Send back this plan (sha256 {run.plan_sha256})?" in text
    db.expire_all()
    decision = db.scalars(select(PlanApproval).where(PlanApproval.run_id == run.id)).first()
    if answer == b"y\n":
        assert code == 0, text
        assert f"requested changes to plan {run.plan_sha256}" in text
        assert decision is not None
        assert (decision.decision, decision.plan_sha256) == ("changes_requested", run.plan_sha256)
    else:
        assert code == 1, text
        assert "nothing was sent: you did not confirm the plan to send back" in text
        assert decision is None
