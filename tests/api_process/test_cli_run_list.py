"""``kodo run list`` against a real API process: what is waiting, who asked, what it cost.

The CLI runs as a real process with its stdout a pipe (as in ``kodo run list | grep``),
so these also pin the plain output: one row per run however long, no colour codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from devstack.kodo_procs import Stack
from shared.db.models import Run
from tests.api_process.hostile import RLO
from tests.factories import IntentFactory, RunFactory

pytestmark = pytest.mark.integration

KODO = Path(sys.executable).parent / "kodo"
HOSTILE_GOAL = f"Fix calc.py\x1b]0;owned\x07 and {RLO}txt.dmr"


def kodo(api_stack: Stack, token: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kodo ARGS`` as a process whose stdout is a pipe, on an 80-column 'terminal'."""
    env = {
        **os.environ,
        "COLUMNS": "80",
        "KODO_API_URL": api_stack.api_url,
        "KODO_API_TOKEN": token,
        "KODO_HOME": str(home),
    }
    return subprocess.run(
        [str(KODO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def store_runs(db: Session, submitter: str) -> tuple[Run, Run]:
    """An older failed run and a newer one waiting for approval, both by ``submitter``."""
    now = datetime.now(UTC)
    older: Run = RunFactory(
        intent=IntentFactory(submitted_by=submitter, repo_path="/srv/repos/billing"),
        status="failed",
        error="verification exited 1",
        spent_usd_micro=1_234_500,
        spent_tokens=4_200,
        created_at=now - timedelta(hours=3),
    )
    newer: Run = RunFactory(
        intent=IntentFactory(submitted_by=submitter, goal=HOSTILE_GOAL),
        waiting_input=True,
        created_at=now - timedelta(minutes=2),
    )
    db.commit()
    return older, newer


def test_run_list_shows_each_run_on_one_plain_row_newest_first(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    submitter = f"sam-{uuid.uuid4().hex[:8]}"
    older, newer = store_runs(db, submitter)

    listed = kodo(api_stack, reader_token, home, "run", "list", "--submitter", submitter)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "submitter", "repo", "cost", "age", "goal"]
    rows = lines[1:]
    assert [row.split()[0] for row in rows] == [newer.id, older.id], "newest first, one row each"
    assert rows[1].split()[1:6] == ["failed", submitter, "billing", "$1.2345", "3h"]
    assert rows[0].split()[1:3] == ["waiting_input", submitter]
    assert rows[0].split()[4:6] == ["$0.0000", "2m"]
    assert "Fix calc.py\\x1b]0;owned\\x07 and \\u202etxt.dmr" in rows[0], "the goal, escaped"
    assert "\x1b" not in listed.stdout, "no escape sequence reaches a pipe"
    assert RLO not in listed.stdout
    assert max(len(line) for line in lines) > 80, "a pipe gets whole rows, not 80-column folds"
    assert "more:" not in listed.stdout


def test_run_list_waiting_shows_only_the_runs_a_human_must_decide(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    submitter = f"wes-{uuid.uuid4().hex[:8]}"
    _, newer = store_runs(db, submitter)

    listed = kodo(
        api_stack, reader_token, home, "run", "list", "--waiting", "--submitter", submitter
    )

    assert listed.returncode == 0, listed.stderr
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == [newer.id]


def test_run_list_pages_with_the_hint_it_prints(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    submitter = f"pat-{uuid.uuid4().hex[:8]}"
    older, newer = store_runs(db, submitter)

    first = kodo(
        api_stack, reader_token, home, "run", "list", "--submitter", submitter, "--limit", "1"
    )

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1].split()[0] == newer.id
    hint = first.stdout.splitlines()[-1]
    assert hint.startswith(f"more: kodo run list --submitter {submitter} --limit 1 --cursor ")
    second = kodo(api_stack, reader_token, home, *hint.removeprefix("more: kodo ").split())
    assert second.returncode == 0, second.stderr
    assert [row.split()[0] for row in second.stdout.splitlines()[1:]] == [older.id]


def test_run_list_json_is_the_apis_page(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    submitter = f"jo-{uuid.uuid4().hex[:8]}"
    older, _ = store_runs(db, submitter)

    listed = kodo(
        api_stack, reader_token, home, "run", "list", "--status", "failed", "--submitter",
        submitter, "--json",
    )  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["nextCursor"] is None
    assert [(r["runId"], r["costUsd"], r["tokens"]) for r in page["runs"]] == [
        (older.id, 1.2345, 4200)
    ]


def test_run_list_refuses_waiting_with_another_status(
    api_stack: Stack, reader_token: str, home: Path
) -> None:
    refused = kodo(api_stack, reader_token, home, "run", "list", "--waiting", "--status", "failed")

    assert refused.returncode == 2
    assert "--waiting means --status waiting_input" in refused.stderr


def test_run_list_repo_shows_only_the_runs_against_that_repository(
    api_stack: Stack, reader_token: str, home: Path, db: Session
) -> None:
    submitter = f"rae-{uuid.uuid4().hex[:8]}"
    older, _ = store_runs(db, submitter)

    listed = kodo(
        api_stack, reader_token, home, "run", "list", "--submitter", submitter,
        "--repo", "/srv/repos/billing",
    )  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == [older.id]
