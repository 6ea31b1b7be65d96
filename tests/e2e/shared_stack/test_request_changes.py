"""Request changes end to end: a reviewer sends the plan back, the plan agent revises it,
and only the revision can be approved and applied (real API, worker, beat, collector and
oc-compat processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.hashing import sha256_hex
from tests.e2e.conftest import Api, provider_calls

pytestmark = pytest.mark.e2e

COMMENT = "Also document the new function in README.md."


def _changed_files(repo: Path, run_id: str) -> set[str]:
    out = subprocess.run(
        ["git", "diff", "--name-only", f"main...kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_a_requested_revision_is_compiled_approved_and_applied_and_the_first_plan_never_is(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test")
    first = api.wait_for(run_id, {"waiting_input"})
    reviewer = api.bearer("rita", "approver")

    asked = api.http.post(
        f"/runs/{run_id}/request-changes",
        json={"comment": COMMENT, "plan_sha256": first["planSha256"]},
        headers=reviewer,
    )
    assert asked.status_code == 200, asked.text
    assert asked.json() == {
        "accepted": True,
        "runId": run_id,
        "status": "changes_requested",
        "planSha256": first["planSha256"],
        "approver": "rita",
        "comment": COMMENT,
        "revision": 2,
    }
    stale = api.http.post(
        f"/runs/{run_id}/approve-plan", json={"plan_sha256": first["planSha256"]}, headers=reviewer
    )
    assert stale.status_code == 409, "a plan sent back can never be approved"

    second = api.wait_for(run_id, {"waiting_input"})
    assert second["planSha256"] != first["planSha256"]
    assert second["retryCount"] == 0, "a revision is not a retry"
    plans = api.http.get(f"/runs/{run_id}/plans").json()
    assert [r["revision"] for r in plans["revisions"]] == [1, 2]
    assert [r["planSha256"] for r in plans["revisions"]] == [
        first["planSha256"],
        second["planSha256"],
    ]
    assert [r["artifact"] for r in plans["revisions"]] == ["plan.json", "plan.r2.json"]
    assert plans["revisions"][0]["decision"]["comment"] == COMMENT
    assert plans["revisions"][1]["decision"] is None
    revised = plans["revisions"][1]["plan"]
    assert "README.md" in {f["path"] for f in revised["files"]}, "the comment was acted on"
    card = api.http.get(f"/runs/{run_id}/artifacts/plan.r2.json", params={"step": "CompileST"})
    assert sha256_hex(card.content) == second["planSha256"], "the digest is over these bytes"

    approved = api.http.post(
        f"/runs/{run_id}/approve-plan", json={"plan_sha256": second["planSha256"]}, headers=reviewer
    )
    assert approved.status_code == 200, approved.text
    done = api.wait_for(run_id, {"succeeded"})

    assert done["retryCount"] == 0
    assert provider_calls(engine, run_id)[:2] == [
        ("CompileST", 1, "succeeded"),
        ("CompileST", 2, "succeeded"),
    ], "the revision's call is a new attempt (a new op_key), never a replay of the first"
    assert "README.md" in _changed_files(sample_repo, run_id), "the revision is what was applied"
