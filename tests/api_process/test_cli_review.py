"""``kodo run show | diff | logs`` and ``kodo calls`` against a real API process.

The run under review is stored as the worker would have left it, with agent-written
text that attacks the terminal in every place it can: the patch, the reviewer's
comment, the command's output, a failed call's error, the diagnostic.
Piped output is read as text; terminal output is fed to pyte and read off its screen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from devstack.kodo_procs import Stack
from shared.db.models import Run, StepRun
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex
from tests.api_process.hostile import RLO
from tests.api_process.test_terminal import cli_env, on_terminal, screen_of
from tests.factories import IntentFactory, OpenCodeCallFactory, PlanApprovalFactory, RunFactory

pytestmark = pytest.mark.integration

KODO = Path(sys.executable).parent / "kodo"
BASE_COMMIT = "0f" * 20
PLAN = {
    "design": "Add multiply.\nThen test it.",
    "files": [{"path": "calc.py", "change": "modify"}],
}
COMMENT = f"LGTM\x1b[2J{RLO}yllaer"
PATCH = (
    "diff --git a/calc.py b/calc.py\n"
    "--- a/calc.py\n"
    "+++ b/calc.py\n"
    "@@ -1,2 +1,4 @@\n"
    " def add(a, b):\n"
    "-    return a+b\n"
    "+    return a + b\n"
    "+def multiply(a, b):\n"
    "+    print('\x1b[2J\x1b]0;owned\x07')\r+    return a * b\n"
    "diff --git a/test_calc.py b/test_calc.py\n"
    "--- a/test_calc.py\n"
    "+++ b/test_calc.py\n"
    "@@ -0,0 +1 @@\n"
    "+assert multiply(2, 3) == 6\n"
)
REPAIR = (
    "diff --git a/calc.py b/calc.py\n"
    "--- a/calc.py\n"
    "+++ b/calc.py\n"
    "@@ -3,2 +3,3 @@\n"
    " def multiply(a, b):\n"
    "-    return a * b\n"
    "+    product = a * b  # \x1b]0;round-two\x07" + RLO + "\n"
    "+    return product\n"
)
OUTPUT = "1 passed\x1b]0;pwned\x07 in 0.01s\n"
CALL_ERROR = "provider 500: overloaded\x1b]0;x\x07"


@dataclass
class Stored:
    run: Run
    submitter: str


def put(db: Session, run: Run, step: StepId, kind: ArtifactKind, name: str, body: bytes) -> None:
    media = "application/json" if name.endswith(".json") else "text/plain; charset=utf-8"
    ArtifactRepo(db).put(run.id, step, kind=kind, name=name, content=body, media_type=media)


def store_reviewed_run(db: Session, *, failed: bool = False, repaired: bool = False) -> Stored:
    """A run approved with a comment, patched, decided and verified (or failed verifying);
    ``repaired``: a second round's patch (a repair on top of the first) follows."""
    submitter = f"sue-{uuid.uuid4().hex[:8]}"
    plan = json.dumps(PLAN).encode()
    traits = {"status": "failed", "error": "verification exited 1: pytest -q"} if failed else {}
    run: Run = RunFactory(
        intent=IntentFactory(submitted_by=submitter, base_commit=BASE_COMMIT),
        succeeded=not failed,
        plan_sha256=sha256_hex(plan),
        branch="kodo/run-1",
        **traits,
    )
    put(db, run, StepId.COMPILE, ArtifactKind.PLAN_CARD, "plan.json", plan)
    PlanApprovalFactory(run=run, plan_sha256=sha256_hex(plan), comment=COMMENT)
    start = datetime.now(UTC) - timedelta(minutes=5)
    for i, step in enumerate(("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")):
        status = "failed" if failed and step == "ExecuteST" else "succeeded"
        db.add(
            StepRun(
                run_id=run.id,
                step_id=step,
                status=status,
                started_at=start + timedelta(seconds=10 * i),
                finished_at=start + timedelta(seconds=10 * i + 4),
                duration_ms=4000 + i,
            )
        )
    for step, attempt, status, tokens, cost in (
        ("CompileST", 1, "succeeded", 1000, 0.01),
        ("ApplyPatchST", 1, "failed", 0, 0.0),
        ("ApplyPatchST", 2, "succeeded", 2000, 0.02),
        ("DecideST", 1, "succeeded", 500, 0.005),
    ):
        OpenCodeCallFactory(
            run=run,
            step_id=step,
            attempt=attempt,
            status=status,
            duration_ms=1200,
            usage={"total_tokens": tokens, "cost_usd": cost} if tokens else None,
            error=CALL_ERROR if status == "failed" else None,
        )
    put(db, run, StepId.APPLY_PATCH, ArtifactKind.PATCH, "patch.diff", PATCH.encode())
    if repaired:
        put(db, run, StepId.APPLY_PATCH, ArtifactKind.PATCH, "patch.r2.diff", REPAIR.encode())
    decision = {"next_action": "verify", "argv": ["pytest", "-q"]}
    put(
        db,
        run,
        StepId.DECIDE,
        ArtifactKind.DECISION,
        "decision.json",
        json.dumps(decision).encode(),
    )
    put(db, run, StepId.EXECUTE, ArtifactKind.COMMAND_OUTPUT, "command-output.txt", OUTPUT.encode())
    if failed:
        diagnostic = {"error": f"verification exited 1: pytest -q{RLO}", "exit_code": 1}
        put(db, run, StepId.EXECUTE, ArtifactKind.DIAGNOSTIC, "diagnostic.json",
            json.dumps(diagnostic).encode())  # fmt: skip
    db.commit()
    return Stored(run, submitter)


def piped(api_stack: Stack, token: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(api_stack, token, home), "COLUMNS": "80"}
    return subprocess.run(
        [str(KODO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_run_show_tells_the_whole_story_on_one_screen(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db)

    shown = piped(api_stack, reader_token, home, "run", "show", stored.run.id)

    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    lines = out.splitlines()
    assert f"submitter:  {stored.submitter}" in lines
    assert f"base:       HEAD at {BASE_COMMIT}" in lines
    assert "  design:   Add multiply." in lines, "the design's first line"
    assert "  file:     modify calc.py" in lines
    assert any(line.startswith("decision:   approved by alice at ") for line in lines)
    assert "  comment:  LGTM\\x1b[2J\\u202eyllaer" in lines, "the comment, escaped"
    apply_row = next(line.split() for line in lines if line.startswith("ApplyPatchST"))
    assert apply_row[:5] == ["ApplyPatchST", "succeeded", "1", "1", "4001"]
    assert apply_row[6:11] == ["2", "(1", "failed)", "2000", "$0.0200"]
    assert "calls:      4 (1 failed), 3500 tokens, $0.0350" in lines
    assert " calc.py      | +3 -1" in lines, "a \\r does not end a line"
    assert " test_calc.py | +1 -0" in lines
    assert "verify:     pytest -q" in lines
    assert "  exit:     0" in lines
    digest = sha256_hex(PATCH.encode())
    assert any(
        line.split()[:2] == ["ApplyPatchST", "patch.diff"] and digest in line for line in lines
    )
    assert "\x1b" not in out
    assert RLO not in out


def test_run_show_of_a_failed_run_gives_the_commands_exit_code(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db, failed=True)

    shown = piped(api_stack, reader_token, home, "run", "show", stored.run.id)

    assert shown.returncode == 0, shown.stderr
    assert "  exit:     1" in shown.stdout.splitlines()
    assert "error:      verification exited 1: pytest -q" in shown.stdout.splitlines()
    assert "diagnostic.json" in shown.stdout


def test_run_diff_piped_is_the_patch_escaped_and_uncoloured(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db)

    diffed = piped(api_stack, reader_token, home, "run", "diff", stored.run.id)

    assert diffed.returncode == 0, diffed.stderr
    lines = diffed.stdout.splitlines()
    assert lines[0] == "diff --git a/calc.py b/calc.py"
    assert "+    print('\\x1b[2J\\x1b]0;owned\\x07')\\r+    return a * b" in lines
    assert lines[-1] == "+assert multiply(2, 3) == 6"
    assert "\x1b" not in diffed.stdout, "no colour and no agent escape in a pipe"
    assert "\r" not in diffed.stdout


def test_a_repaired_runs_show_and_diff_give_every_round_not_only_the_repair(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db, repaired=True)

    shown = piped(api_stack, reader_token, home, "run", "show", stored.run.id)
    diffed = piped(api_stack, reader_token, home, "run", "diff", stored.run.id)
    second = piped(api_stack, reader_token, home, "run", "diff", "--round", "2", stored.run.id)
    third = piped(api_stack, reader_token, home, "run", "diff", "--round", "3", stored.run.id)

    assert shown.returncode == diffed.returncode == second.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = lines.index("diffstat, 2 rounds:")
    assert lines[at + 1 : at + 8] == [
        "patch.diff (round 1)",
        " calc.py      | +3 -1",
        " test_calc.py | +1 -0",
        " 2 file(s) changed, +4 -1",
        "patch.r2.diff (round 2, a repair on top of round 1)",
        " calc.py | +2 -1",
        " 1 file(s) changed, +2 -1",
    ]
    printed = diffed.stdout.splitlines()
    assert printed[0] == "# patch.diff (round 1)"
    assert printed.index("# patch.r2.diff (round 2, a repair on top of round 1)") > printed.index(
        "+assert multiply(2, 3) == 6"
    ), "the rounds in the order they were committed"
    assert printed[-1] == "+    return product"
    assert second.stdout.splitlines()[1:] == [
        line.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace(RLO, "\\u202e")
        for line in REPAIR.splitlines()
    ], "round 2 alone, escaped like round 1"
    for out in (shown.stdout, diffed.stdout, second.stdout):
        drawn_raw = [c for c in ("\x1b", "\x07", RLO) if c in out]
        assert drawn_raw == [], "no agent byte drawn raw"
    assert third.returncode == 1
    assert "has 2 round(s) of patches" in third.stderr


def test_run_diff_on_a_terminal_is_coloured_and_obeys_no_agent_escape(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db)

    code, output = on_terminal(
        [str(KODO), "run", "diff", stored.run.id], cli_env(api_stack, reader_token, home)
    )

    assert code == 0, output.decode(errors="replace")
    assert b"\x1b[32m" in output, "added lines are green on a terminal"
    assert b"\x1b]0;" not in output
    assert b"\x1b[2J" not in output
    screen = screen_of(output)
    text = "\n".join(screen.display)
    assert "print('\\x1b[2J\\x1b]0;owned\\x07')\\r+    return a * b" in text
    assert screen.title == ""


def test_run_logs_prints_the_output_and_the_diagnostic_escaped(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db, failed=True)

    logs = piped(api_stack, reader_token, home, "run", "logs", stored.run.id)

    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert lines[0].startswith("== command-output.txt (sha256 ")
    assert "  1 passed\\x1b]0;pwned\\x07 in 0.01s" in lines  # indented: the command's
    assert any(line.startswith("== diagnostic.json of ExecuteST (sha256 ") for line in lines)
    assert '  "error": "verification exited 1: pytest -q\\u202e",' in lines
    assert '  "exit_code": 1' in lines
    assert "\x1b" not in logs.stdout
    assert RLO not in logs.stdout


def test_run_logs_and_diff_of_a_run_without_them_say_why_with_exit_1(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    run: Run = RunFactory(waiting_input=True)
    db.commit()

    logs = piped(api_stack, reader_token, home, "run", "logs", run.id)
    diff = piped(api_stack, reader_token, home, "run", "diff", run.id)

    assert logs.returncode == 1
    assert "has no command output or diagnostic yet" in logs.stderr
    assert diff.returncode == 1
    assert "has no patch yet" in diff.stderr


def test_calls_shows_why_a_call_failed_and_what_all_of_them_cost(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db)

    listed = piped(api_stack, reader_token, home, "calls", stored.run.id)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[-1] == "error"
    failed = next(
        line for line in lines if line.split()[:4] == ["ApplyPatchST", "plan", "1", "failed"]
    )
    assert failed.rstrip().endswith("provider 500: overloaded\\x1b]0;x\\x07"), "escaped reason"
    assert lines[-1] == "4 call(s) (1 failed), 3500 tokens, $0.0350"
    assert "\x1b" not in listed.stdout


def test_run_show_json_is_every_answer_it_draws(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    stored = store_reviewed_run(db, failed=True)

    shown = piped(api_stack, reader_token, home, "run", "show", stored.run.id, "--json")

    assert shown.returncode == 0, shown.stderr
    story = json.loads(shown.stdout)
    assert story["run"]["status"] == "failed"
    assert story["intent"]["submittedBy"] == stored.submitter
    assert story["plans"]["revisions"][0]["decision"]["comment"] == COMMENT
    assert len(story["calls"]) == 4
    assert {a["name"] for a in story["artifacts"]} == {
        "plan.json",
        "patch.diff",
        "decision.json",
        "command-output.txt",
        "diagnostic.json",
    }
    assert story["decision"]["argv"] == ["pytest", "-q"]
    assert story["diagnostic"]["exit_code"] == 1


def test_run_show_of_a_run_that_has_no_plan_yet_says_so(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    run: Run = RunFactory(queued=True)
    db.commit()

    shown = piped(api_stack, reader_token, home, "run", "show", run.id)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "plan:       - (none compiled yet)" in lines
    assert "verify:     - (no command chosen)" in lines
    assert "artifacts: 0" in lines
    assert "calls:      0 (0 failed), 0 tokens, $0.0000" in lines
