"""Every decision made through the API writes one JSON audit line: who and what.

The real app on the test database; the lines are read as the process writes them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from shared.logging import configure_logging
from shared.service.tokens import Role, create_token, revoke_token
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory

from .conftest import issue_token

pytestmark = pytest.mark.integration


@pytest.fixture
def out(client: FlaskClient) -> Iterator[io.StringIO]:
    """The app's log stream (configured after the app was built, as a process would be)."""
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    configure_logging(json=True, level="INFO")


def audit_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == "audit"]


def test_submitting_and_starting_write_who_and_what(
    client: FlaskClient, git_repo: Path, out: io.StringIO
) -> None:
    intent = client.post("/intents", json={"repo": str(git_repo), "goal": "g"}).get_json()
    run = client.post(f"/intents/{intent['intentId']}/run").get_json()

    created, started = audit_lines(out)
    assert created["action"] == "intent.create"
    assert (created["principal"], created["role"]) == ("ann", "admin")
    assert created["intent_id"] == intent["intentId"]
    assert (created["status"], created["outcome"], created["via"]) == (201, "done", "api")
    assert created["logger"] == "kodo.audit"
    assert started["action"] == "run.start"
    assert (started["intent_id"], started["run_id"]) == (intent["intentId"], run["runId"])
    assert started["status"] == 202


def test_submitting_with_run_true_writes_one_line_naming_both_decisions(
    client: FlaskClient, git_repo: Path, out: io.StringIO
) -> None:
    made = client.post("/intents", json={"repo": str(git_repo), "goal": "g", "run": True})

    (line,) = audit_lines(out)
    assert line["action"] == "intent.create+run.start"
    assert (line["intent_id"], line["run_id"]) == (made.get_json()["intentId"],) * 2
    assert (line["status"], line["outcome"]) == (201, "done")


def test_an_approval_names_the_approver_the_run_and_the_plan_digest(
    client: FlaskClient, db: Session, out: io.StringIO
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    approved = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})
    assert approved.status_code == 200

    (line,) = audit_lines(out)
    assert line["action"] == "plan.approve"
    assert (line["principal"], line["role"], line["run_id"]) == ("ann", "admin", run.id)
    assert line["plan_sha256"] == run.plan_sha256
    assert (line["status"], line["outcome"]) == (200, "done")


def test_rejections_and_cancels_are_audited(
    client: FlaskClient, db: Session, out: io.StringIO
) -> None:
    rejected, cancelled = RunFactory(waiting_input=True), RunFactory(waiting_input=True)
    db.commit()

    client.post(f"/runs/{rejected.id}/reject-plan", json={"comment": "too risky"})
    client.post(f"/runs/{cancelled.id}/cancel")

    assert [(line["action"], line["run_id"]) for line in audit_lines(out)] == [
        ("plan.reject", rejected.id),
        ("run.cancel", cancelled.id),
    ]


def test_a_refused_decision_is_audited_with_its_status(
    client: FlaskClient, db: Session, out: io.StringIO
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    stale = "0" * 64

    response = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": stale})

    assert response.status_code == 409
    (line,) = audit_lines(out)
    assert (line["action"], line["outcome"], line["status"]) == ("plan.approve", "refused", 409)
    assert line["plan_sha256"] == stale


def test_an_attempt_the_role_does_not_allow_is_audited_naming_who_tried(
    app: Flask, sessions: sessionmaker[Session], db: Session, out: io.StringIO
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    submitter = app.test_client()
    submitter.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {issue_token(sessions, 'sam', Role.SUBMITTER)}"
    )

    response = submitter.post(f"/runs/{run.id}/approve-plan")

    assert response.status_code == 403
    (line,) = [line for line in audit_lines(out) if line["action"] != "token.create"]
    assert (line["action"], line["principal"], line["role"]) == ("plan.approve", "sam", "submitter")
    assert (line["run_id"], line["status"], line["outcome"]) == (run.id, 403, "refused")
    db.expire_all()
    assert db.get(type(run), run.id).status == "waiting_input"  # refused: nothing changed


def test_a_request_without_a_principal_and_reads_write_no_audit_line(
    client: FlaskClient, anonymous: FlaskClient, db: Session, out: io.StringIO
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    assert anonymous.post(f"/runs/{run.id}/approve-plan").status_code == 401
    assert client.get(f"/runs/{run.id}").status_code == 200

    assert audit_lines(out) == []


def test_token_changes_are_audited_by_the_service(
    sessions: sessionmaker[Session], out: io.StringIO
) -> None:
    with UnitOfWork(sessions) as uow:
        plaintext = create_token(uow, "bob", Role.APPROVER)
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "bob", now=datetime.now(UTC))

    created, revoked = audit_lines(out)
    assert (created["action"], created["token_name"], created["role"]) == (
        "token.create",
        "bob",
        "approver",
    )
    assert (revoked["action"], revoked["token_name"]) == ("token.revoke", "bob")
    assert plaintext not in out.getvalue()


def test_request_changes_and_retry_name_the_principal_and_its_role(
    app: Flask, sessions: sessionmaker[Session], db: Session, out: io.StringIO
) -> None:
    run = RunFactory(waiting_input=True)
    failed = RunFactory(status="failed", last_step="CompileST", next_action="none")
    db.commit()
    approver, admin = app.test_client(), app.test_client()
    approver.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {issue_token(sessions, 'ava', Role.APPROVER)}"
    )
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issue_token(sessions, 'ada', Role.ADMIN)}"

    changed = approver.post(
        f"/runs/{run.id}/request-changes",
        json={"comment": "smaller", "planSha256": run.plan_sha256},
    )
    retried = admin.post(f"/runs/{failed.id}/retry")  # no checkpoint: the command refuses

    first, second = [line for line in audit_lines(out) if line["action"] != "token.create"]
    assert (first["action"], first["principal"], first["role"]) == (
        "plan.request_changes",
        "ava",
        "approver",
    )
    assert (first["run_id"], first["status"]) == (run.id, changed.status_code)
    assert (second["action"], second["principal"], second["role"]) == ("run.retry", "ada", "admin")
    assert (second["status"], second["outcome"]) == (retried.status_code, "refused")


def test_a_body_too_large_or_not_json_is_still_audited_from_the_url_and_the_answer(
    client: FlaskClient, out: io.StringIO
) -> None:
    from .conftest import MAX_BODY

    too_large = client.post(
        "/intents", data=b"{" + b" " * (MAX_BODY + 10) + b"}", content_type="application/json"
    )
    nested = client.post("/intents", data="[" * 4000, content_type="application/json")

    assert (too_large.status_code, nested.status_code) == (413, 400)
    first, second = audit_lines(out)
    assert (first["action"], first["status"], first["outcome"]) == ("intent.create", 413, "refused")
    assert (second["action"], second["status"], second["outcome"]) == (
        "intent.create",
        400,
        "refused",
    )
