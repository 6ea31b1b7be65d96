"""Repair end to end: a failed verification goes back to the build agent with its output,
the fix is verified again with the command DecideST chose, and a run whose repairs run
out fails (real API, worker, beat, collector and oc-compat processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.e2e.conftest import Api, branch_log, provider_calls

pytestmark = pytest.mark.e2e


def test_a_failing_test_goes_back_to_the_build_agent_which_fixes_it_and_the_run_succeeds(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test [oc:buggy]")
    api.approve(run_id)

    done = api.wait_for(run_id, {"succeeded"})

    rounds = {s["stepId"]: s["round"] for s in done["steps"]}
    assert rounds == {"CompileST": 1, "ApplyPatchST": 2, "DecideST": 1, "ExecuteST": 2}
    assert provider_calls(engine, run_id) == [
        ("CompileST", 1, "succeeded"),
        ("ApplyPatchST", 1, "succeeded"),
        ("DecideST", 1, "succeeded"),
        ("ApplyPatchST", 2, "succeeded"),  # the repair: its own attempt, op_key and row
    ]
    names = {a["name"] for a in api.http.get(f"/runs/{run_id}/artifacts").json()}
    assert {"command-output.txt", "command-output.r2.txt", "patch.diff", "patch.r2.diff"} <= names
    failed_output = api.http.get(
        f"/runs/{run_id}/artifacts/command-output.txt", params={"step": "ExecuteST"}
    ).text
    assert "FAILED" in failed_output, "the first verification really failed"
    with engine.connect() as conn:
        asked = conn.execute(
            text(
                "SELECT round_input FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert asked["kind"] == "repair"
    assert asked["repair"] == 1
    assert "FAILED" in asked["output"], "the build agent was shown the failing output"
    assert len(branch_log(sample_repo, run_id)) == 2, "the build and its repair"
    calc = subprocess.run(
        ["git", "show", f"kodo/{run_id}:calc.py"],
        cwd=sample_repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "return a * b" in calc
    assert done["error"] is None, "the failed verification's error went with the repair"


def test_a_verification_that_keeps_failing_ends_the_run_after_the_last_repair(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a note to README.md [oc:fail-verify]")
    api.approve(run_id)

    ended = api.wait_for(run_id, {"failed"}, deadline_s=90)

    assert ended["error"].startswith("verification exited 3")
    applies = [
        (step, attempt) for step, attempt, _ in provider_calls(engine, run_id) if step != "DecideST"
    ]
    assert applies == [
        ("CompileST", 1),
        ("ApplyPatchST", 1),
        ("ApplyPatchST", 2),
        ("ApplyPatchST", 3),
    ], "KODO_MAX_REPAIRS=2: two repairs, then the run fails"
    assert {s["stepId"]: s["round"] for s in ended["steps"]}["ExecuteST"] == 3


def test_an_escalated_question_is_shown_answered_over_http_and_the_run_goes_on(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a note to README.md [oc:escalate]")
    api.approve(run_id)

    waiting = api.wait_for(run_id, {"waiting_input"})  # approving moved it to applying first
    assert waiting["nextAction"] == "await:answer"
    assert waiting["question"] == "Should the change also cover negative numbers?"
    alice = api.bearer("alice", "approver")
    digest = {"planSha256": waiting["planSha256"]}
    refused = api.http.post(f"/runs/{run_id}/approve-plan", json=digest, headers=alice)
    assert refused.status_code == 409, "a question waits for an answer, not an approval"

    answer = {"comment": "No, keep it small.", "questionSha256": waiting["questionSha256"]}
    answered = api.http.post(f"/runs/{run_id}/answer", json=answer, headers=alice)
    assert answered.status_code == 200, answered.text
    assert answered.json()["answeredBy"] == "alice"

    done = api.wait_for(run_id, {"succeeded"})
    assert done["question"] is None
    assert {s["stepId"]: s["round"] for s in done["steps"]}["DecideST"] == 2
    decides = [c for c in provider_calls(engine, run_id) if c[0] == "DecideST"]
    assert [attempt for _, attempt, _ in decides] == [1, 2]
