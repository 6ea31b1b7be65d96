"""A run's plan, provider calls and artifacts, read back without side effects."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.event import listen, remove
from sqlalchemy.orm import Session

from services.api.reads import run_page
from services.api.state import state_of
from shared.db.models import Run
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex
from tests.factories import OpenCodeCallFactory, PlanApprovalFactory, RunFactory, settle_call

pytestmark = pytest.mark.integration

PLAN = {"summary": "Add a docstring", "files": ["calc.py"]}


def put_plan(db: Session, run: Run, content: bytes | None = None) -> None:
    """Store PLAN (or ``content``) as the run's plan card; the run's digest becomes its
    bytes' sha256."""
    content = json.dumps(PLAN).encode() if content is None else content
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=content,
        media_type="application/json",
    )
    run.plan_sha256 = sha256_hex(content)
    db.flush()


def test_a_run_without_a_plan_yet_is_a_404_saying_so(client: FlaskClient, db: Session) -> None:
    run = RunFactory()
    db.commit()

    response = client.get(f"/runs/{run.id}/plan")

    assert response.status_code == 404
    assert "no plan yet" in response.get_json()["error"]["message"]


def test_the_plan_is_served_parsed_with_no_decision_yet(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run)
    db.commit()

    response = client.get(f"/runs/{run.id}/plan")

    assert response.status_code == 200
    assert response.get_json() == {
        "runId": run.id,
        "planSha256": run.plan_sha256,
        "plan": PLAN,
        "approval": None,
    }


def test_the_plan_carries_its_approval(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run)
    PlanApprovalFactory(run=run, approver="ann")
    db.commit()

    body = client.get(f"/runs/{run.id}/plan").get_json()

    assert body["approval"]["decision"] == "approved"
    assert body["approval"]["approver"] == "ann"


def test_a_digest_that_names_none_of_the_runs_plan_cards_is_refused_not_shown(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run)
    run.plan_sha256 = "0" * 64  # the digest an approver would sign is over no stored card
    db.commit()

    response = client.get(f"/runs/{run.id}/plan")

    assert response.status_code == 500
    assert "is none of its plan cards" in response.get_json()["error"]["message"]


def test_a_plan_card_that_is_not_json_is_refused(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run, b"{not json")
    db.commit()

    response = client.get(f"/runs/{run.id}/plan")

    assert response.status_code == 500
    assert "not valid JSON" in response.get_json()["error"]["message"]


def test_an_unknown_run_has_no_plan_404(client: FlaskClient) -> None:
    response = client.get("/runs/00000000-0000-0000-0000-000000000000/plan")

    assert response.status_code == 404
    assert "not found" in response.get_json()["error"]["message"]


def test_the_plan_is_read_in_one_statement_outside_a_transaction(
    client: FlaskClient, db: Session, app: Flask
) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run)
    PlanApprovalFactory(run=run, approver="ann")
    db.commit()
    engine = state_of(app).engine
    sent: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        sent.append(statement.split()[0])

    listen(engine, "before_cursor_execute", seen)
    try:
        body = client.get(f"/runs/{run.id}/plan").get_json()
    finally:
        remove(engine, "before_cursor_execute", seen)

    assert body["approval"]["approver"] == "ann"
    assert body["plan"] == PLAN
    assert sent == ["SELECT", "SELECT"]  # the token, then the run, its card and decision


def test_calls_are_listed_without_their_bodies(client: FlaskClient, db: Session) -> None:
    call = OpenCodeCallFactory(usage={"totalTokens": 12}, duration_ms=40, response={"secret": "x"})
    db.commit()

    response = client.get(f"/runs/{call.run_id}/calls")

    assert response.status_code == 200
    body = response.get_json()
    assert body["runId"] == call.run_id
    [listed] = body["calls"]
    assert listed["opKey"] == call.op_key
    assert (listed["agent"], listed["usage"], listed["durationMs"]) == (
        "plan",
        {"totalTokens": 12},
        40,
    )
    assert "request" not in listed
    assert "response" not in listed


def test_a_settled_call_lists_what_it_spent_of_the_budget(client: FlaskClient, db: Session) -> None:
    """A turn cut at its deadline spends its reservation; the listing says so beside the
    usage the daemon reported, and the run page's figures are those spends."""
    run = RunFactory(reserved_usd_micro=2_000, reserved_tokens=800)
    call = OpenCodeCallFactory(
        run=run, status="sent", session_id="ses_1", reserved_usd_micro=2_000, reserved_tokens=800
    )
    db.commit()
    [sent] = client.get(f"/runs/{call.run_id}/calls").get_json()["calls"]
    assert (sent["spentUsd"], sent["spentTokens"]) == (None, None), "not settled yet"
    settle_call(db, call, status="timed_out", usage={"total_tokens": 50, "cost_usd": 0.0001})
    db.commit()

    [listed] = client.get(f"/runs/{call.run_id}/calls").get_json()["calls"]
    assert listed["usage"] == {"totalTokens": 50, "costUsd": 0.0001}
    assert (listed["spentUsd"], listed["spentTokens"]) == (0.002, 800)
    page = run_page(db, call.run_id, max_revisions=5)
    assert (page.cost_usd, page.tokens) == (0.002, 800), "as the run's budget counts them"


def test_calls_of_an_unknown_run_are_a_404(client: FlaskClient) -> None:
    assert client.get("/runs/no-such-run/calls").status_code == 404


def test_artifacts_are_listed_and_served_raw_with_their_digest(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    put_plan(db, run)
    diff = b"--- a/calc.py\n+++ b/calc.py\n"
    ArtifactRepo(db).put(
        run.id,
        StepId.APPLY_PATCH,
        kind=ArtifactKind.PATCH,
        name="out/patch.diff",
        content=diff,
        media_type="text/x-diff",
    )
    db.commit()

    listing = client.get(f"/runs/{run.id}/artifacts").get_json()
    raw = client.get(f"/runs/{run.id}/artifacts/out/patch.diff?step=ApplyPatchST")

    assert [(a["stepId"], a["name"], a["kind"]) for a in listing] == [
        ("CompileST", "plan.json", "plan_card"),
        ("ApplyPatchST", "out/patch.diff", "patch"),
    ]
    assert listing[1]["size"] == len(diff)
    assert raw.status_code == 200
    assert raw.data == diff
    assert raw.mimetype == "text/x-diff"
    assert raw.headers["X-Content-SHA256"] == sha256_hex(diff) == listing[1]["sha256"]


def test_an_artifact_name_that_several_steps_wrote_needs_a_step(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory()
    for step in (StepId.COMPILE, StepId.EXECUTE):
        ArtifactRepo(db).put(
            run.id,
            step,
            kind=ArtifactKind.DIAGNOSTIC,
            name="diagnostic.json",
            content=json.dumps({"step": step.value}).encode(),
            media_type="application/json",
        )
    db.commit()

    ambiguous = client.get(f"/runs/{run.id}/artifacts/diagnostic.json")
    picked = client.get(f"/runs/{run.id}/artifacts/diagnostic.json?step=ExecuteST")

    assert ambiguous.status_code == 409
    assert ambiguous.get_json()["error"]["details"] == {"steps": ["CompileST", "ExecuteST"]}
    assert picked.get_json() == {"step": "ExecuteST"}


def test_an_unknown_artifact_or_step_is_a_4xx(client: FlaskClient, db: Session) -> None:
    run = RunFactory()
    db.commit()

    missing = client.get(f"/runs/{run.id}/artifacts/nothing.txt")
    bad_step = client.get(f"/runs/{run.id}/artifacts/nothing.txt?step=NoSuchST")

    assert missing.status_code == 404
    assert bad_step.status_code == 400
    assert "step" in bad_step.get_json()["error"]["details"]
