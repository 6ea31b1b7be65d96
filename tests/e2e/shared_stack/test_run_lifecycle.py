"""A run end to end over HTTP, through real worker, beat and OpenCode-compatible processes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from shared.db.engine import make_session_factory
from shared.hashing import sha256_hex
from shared.service.runs import approve_plan
from shared.service.uow import UnitOfWork
from tests.e2e.conftest import Api, branch_log
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def _ledger(engine: Engine, run_id: str) -> list[tuple[str, int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT step_id, attempt, status, op_key FROM app.opencode_calls"
                " WHERE run_id = :r ORDER BY id"
            ),
            {"r": run_id},
        ).all()
    return [(r.step_id, r.attempt, r.status, r.op_key) for r in rows]


def test_an_approved_plan_is_applied_verified_and_recorded(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test")
    waiting = api.wait_for(run_id, {"waiting_input"})
    assert waiting["nextAction"] == "await:approval"
    assert branch_log(sample_repo, run_id) == [], "no code may change before approval"

    plan = api.http.get(f"/runs/{run_id}/plan").json()
    assert plan["planSha256"] == waiting["planSha256"]
    assert {"design", "files", "risks", "tests"} <= set(plan["plan"])

    approved = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"plan_sha256": plan["planSha256"]},
        headers=api.bearer("alice", "approver"),
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["accepted"] is True

    done = api.wait_for(run_id, {"succeeded"})
    assert done["lastStep"] == "ExecuteST"
    assert [s["stepId"] for s in done["steps"]] == [
        "CompileST",
        "ApplyPatchST",
        "DecideST",
        "ExecuteST",
    ]
    assert all(s["status"] == "succeeded" for s in done["steps"])

    ledger = _ledger(engine, run_id)
    assert [(step, attempt, status) for step, attempt, status, _ in ledger] == [
        ("CompileST", 1, "succeeded"),
        ("ApplyPatchST", 1, "succeeded"),
        ("DecideST", 1, "succeeded"),
    ]
    assert len({key for *_, key in ledger}) == 3

    commits = branch_log(sample_repo, run_id)
    assert len(commits) == 1
    assert commits[0].startswith("kodo: ")

    artifacts = api.http.get(f"/runs/{run_id}/artifacts").json()
    items = artifacts["artifacts"] if isinstance(artifacts, dict) else artifacts
    names = {a["name"] for a in items}
    assert {"plan.json", "patch.diff", "decision.json", "command-output.txt"} <= names
    with engine.connect() as conn:
        for row in conn.execute(
            text("SELECT content, sha256 FROM app.artifacts WHERE run_id = :r"), {"r": run_id}
        ):
            assert sha256_hex(bytes(row.content)) == row.sha256
        approval = conn.execute(
            text(
                "SELECT approver, approved_at, plan_sha256 FROM app.plan_approvals"
                " WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
        first_change = conn.execute(
            text(
                "SELECT started_at FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert approval.approver == "alice"
    assert approval.plan_sha256 == plan["planSha256"]
    assert approval.approved_at <= first_change


def test_a_rejected_plan_ends_the_run_and_changes_nothing(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Rename add to plus everywhere")
    api.wait_for(run_id, {"waiting_input"})
    rejected = api.http.post(f"/runs/{run_id}/reject-plan", headers=api.bearer("bob", "approver"))
    assert rejected.status_code == 200, rejected.text
    run = api.wait_for(run_id, {"rejected"})
    assert run["finishedAt"] is not None
    assert [step for step, *_ in _ledger(engine, run_id)] == ["CompileST"]
    assert branch_log(sample_repo, run_id) == []
    late = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"planSha256": run["planSha256"]},
        headers=api.bearer("alice", "approver"),
    )
    assert late.status_code == 409


def test_a_plan_that_never_validates_fails_with_a_diagnostic(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Make calc.py faster [oc:invalid]")
    failed = api.wait_for(run_id, {"failed"})
    assert "no valid plan after 3 attempts" in (failed["error"] or "")
    ledger = _ledger(engine, run_id)
    assert [(step, attempt, status) for step, attempt, status, _ in ledger] == [
        ("CompileST", 1, "failed"),
        ("CompileST", 2, "failed"),
        ("CompileST", 3, "failed"),
    ]
    diagnostic = api.http.get(f"/runs/{run_id}/artifacts").json()
    items = diagnostic["artifacts"] if isinstance(diagnostic, dict) else diagnostic
    assert any(a["name"] == "diagnostic.json" and a["kind"] == "diagnostic" for a in items)
    with engine.connect() as conn:
        body = conn.execute(
            text(
                "SELECT content FROM app.artifacts WHERE run_id = :r AND name = 'diagnostic.json'"
            ),
            {"r": run_id},
        ).scalar_one()
    report = json.loads(bytes(body))
    assert len(report["attempts"]) == 3
    assert all("ContractViolation" in a["error"] for a in report["attempts"])


def test_the_downloaded_plan_json_hashes_to_the_digest_an_approver_approves(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    """`sha256sum plan.json` is planSha256: one digest, over the bytes anyone downloads
    (UTF-8 text included), so an approver may approve the digest of the file they read."""
    run_id = api.submit(sample_repo, "Document the naïve reading of calc.py — für alle")
    waiting = api.wait_for(run_id, {"waiting_input"})
    digest = waiting["planSha256"]

    download = api.http.get(f"/runs/{run_id}/artifacts/plan.json", params={"step": "CompileST"})
    assert download.status_code == 200, download.text
    assert sha256_hex(download.content) == digest
    assert download.headers["X-Content-SHA256"] == digest
    assert "naïve" in json.loads(download.content)["design"]
    catalog = api.http.get(f"/runs/{run_id}/artifacts").json()
    [listed] = [a for a in catalog if a["name"] == "plan.json"]
    assert listed["sha256"] == digest
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT sha256 FROM app.artifacts WHERE run_id = :r AND name = 'plan.json'"),
            {"r": run_id},
        ).scalar_one()
    assert stored == digest

    approved = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"plan_sha256": sha256_hex(download.content)},
        headers=api.bearer("carol", "approver"),
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["accepted"] is True
    api.wait_for(run_id, {"succeeded"})


def test_a_verification_that_fails_ends_the_run_failed_with_its_output_and_a_diagnostic(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a note to README.md [oc:fail-verify]")
    api.approve(run_id)

    failed = api.wait_for(run_id, {"failed"})

    assert failed["lastStep"] == "ExecuteST"
    assert (failed["error"] or "").startswith("verification exited 3: python3 -c ")
    assert [(s["stepId"], s["status"], s["round"]) for s in failed["steps"]] == [
        ("CompileST", "succeeded", 1),
        ("ApplyPatchST", "succeeded", 3),  # the build and its two repairs (KODO_MAX_REPAIRS)
        ("DecideST", "succeeded", 1),
        ("ExecuteST", "failed", 3),
    ]
    assert len(branch_log(sample_repo, run_id)) == 3, "the applied patches stay on the branch"
    with engine.connect() as conn:
        found = {
            row.name: bytes(row.content)
            for row in conn.execute(
                text("SELECT name, content FROM app.artifacts WHERE run_id = :r"), {"r": run_id}
            )
        }
    assert b"verification failed" in found["command-output.txt"]
    report = json.loads(found["diagnostic.json"])
    assert report["exit_code"] == 3
    assert report["error"] == failed["error"]


WATCHER_SLACK_S = 5.0
"""Beyond one watcher period: beat's tick, the worker picking the task up, two commits."""


def test_an_approval_recorded_without_the_endpoint_is_dispatched_by_the_watcher_within_its_period(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    """No endpoint dispatches this approval, so only beat's approval watcher can move it."""
    period_s = float(api.stack.env["APPROVAL_POLL_S"])
    bound_s = period_s + WATCHER_SLACK_S
    run_id = api.submit(sample_repo, "Add a divide function to calc.py")
    waiting = api.wait_for(run_id, {"waiting_input"})

    with UnitOfWork(make_session_factory(engine)) as uow:  # sends nothing: dispatch=False
        approve_plan(
            uow,
            run_id,
            approver="carol",
            plan_sha256=waiting["planSha256"],
            now=datetime.now(UTC),
            dispatch=False,
        )
    recorded = time.monotonic()
    wait_until(
        lambda: api.run(run_id)["status"] != "waiting_input",
        bound_s,
        f"the watcher (every {period_s:g}s) to dispatch the approved run",
    )
    waited_s = time.monotonic() - recorded
    print(f"dispatched by the watcher {waited_s:.2f}s after the approval")

    assert waited_s < bound_s
    with engine.connect() as conn:
        approval = conn.execute(
            text(
                "SELECT approver, EXTRACT(EPOCH FROM dispatched_at - approved_at) AS lag_s"
                " FROM app.plan_approvals WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
    assert approval.approver == "carol"
    assert 0 <= float(approval.lag_s) < bound_s, "by the database's clock too"
    done = api.wait_for(run_id, {"succeeded"})
    assert done["lastStep"] == "ExecuteST"


def test_a_run_cancelled_while_its_sent_call_thinks_aborts_the_call_and_records_it(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    """No worker holds the call (it was sent with prompt_async and the step parked): the
    cancel's abort task finds the sent call in the ledger, aborts its session at the
    daemon and records it aborted; nothing of the run is collected or asked again."""
    run_id = api.submit(sample_repo, "Add multiply to calc.py [oc:slow=60000]")
    wait_until(
        lambda: [c for c in _ledger(engine, run_id) if c[2] == "sent"],
        30,
        "CompileST's call to be sent",
    )
    reply = api.http.post(f"/runs/{run_id}/cancel", json={})
    assert reply.status_code in (200, 202), reply.text
    api.wait_for(run_id, {"cancelled"})
    wait_until(
        lambda: _ledger(engine, run_id)[0][2] == "aborted",
        30,
        "the sent call to be recorded aborted",
    )
    [(step, attempt, status, _)] = _ledger(engine, run_id)
    assert (step, attempt, status) == ("CompileST", 1, "aborted")
    with engine.connect() as conn:
        error_name = conn.execute(
            text("SELECT error_name FROM app.opencode_calls WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert error_name == "RunCancelled"
