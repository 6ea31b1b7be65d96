"""Every endpoint but health needs a live bearer token with the right role."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import ApiToken, PlanApproval
from shared.hashing import sha256_hex
from shared.service.tokens import Role, revoke_token
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory
from tests.integration.api.conftest import NOW, issue_token

pytestmark = pytest.mark.integration


def _as(app: Flask, token: str) -> FlaskClient:
    authed = app.test_client()
    authed.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return authed


def test_health_and_the_api_description_are_public_and_everything_else_needs_a_token(
    anonymous: FlaskClient, db: Session
) -> None:
    run = RunFactory()
    db.commit()
    assert anonymous.get("/healthz").status_code in {200, 503}
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    for method, path in [
        ("get", f"/runs/{run.id}"),
        ("get", "/runs"),
        ("get", "/intents"),
        ("get", "/metrics"),
        ("post", "/intents"),
        ("post", f"/runs/{run.id}/approve-plan"),
    ]:
        reply = getattr(anonymous, method)(path)
        assert reply.status_code == 401, (method, path)
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="kodo"'
        assert reply.get_json()["error"]["code"] == "unauthorized"
    page = anonymous.get(f"/ui/runs/{run.id}")
    assert page.status_code == 303, "a browser is sent to sign in instead"
    assert page.headers["Location"] == f"/ui/login?next=/ui/runs/{run.id}"


def test_an_unknown_malformed_or_revoked_token_is_refused(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory()
    db.commit()
    token = issue_token(sessions, "bob", Role.SUBMITTER)
    assert _as(app, token).get(f"/runs/{run.id}").status_code == 200
    assert _as(app, "kodo_not-a-real-token").get(f"/runs/{run.id}").status_code == 401
    basic = app.test_client()
    basic.environ_base["HTTP_AUTHORIZATION"] = "Basic Ym9iOng="
    assert basic.get(f"/runs/{run.id}").status_code == 401
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "bob", now=NOW)
    assert _as(app, token).get(f"/runs/{run.id}").status_code == 401


def test_a_submitter_may_not_decide_and_an_approver_may_not_submit(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    submitter = _as(app, issue_token(sessions, "sam", Role.SUBMITTER))
    approver = _as(app, issue_token(sessions, "ava", Role.APPROVER))
    denied = submitter.post(f"/runs/{run.id}/approve-plan")
    assert denied.status_code == 403
    assert denied.get_json()["error"]["code"] == "forbidden"
    assert submitter.post(f"/runs/{run.id}/cancel").status_code == 403
    assert approver.post("/intents", json={"repo": "/x", "goal": "g"}).status_code == 403
    assert approver.post(f"/intents/{run.id}/run").status_code == 403
    digest = {"planSha256": run.plan_sha256}
    assert approver.post(f"/runs/{run.id}/approve-plan", json=digest).status_code == 200


def test_the_approval_records_the_tokens_owner_and_refuses_an_impostor_name(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    approver = _as(app, issue_token(sessions, "ava", Role.APPROVER))
    url, digest = f"/runs/{run.id}/approve-plan", run.plan_sha256
    impostor = approver.post(url, json={"approver": "the-cto", "planSha256": digest})
    assert impostor.status_code == 403
    assert approver.post(url, json={"approver": "ava", "planSha256": digest}).status_code == 200
    db.expire_all()
    row = db.execute(select(PlanApproval).where(PlanApproval.run_id == run.id)).scalar_one()
    assert row.approver == "ava"


def test_tokens_are_stored_only_as_digests(sessions: sessionmaker[Session], db: Session) -> None:
    token = issue_token(sessions, "dora", Role.ADMIN)
    stored = db.execute(select(ApiToken).where(ApiToken.name == "dora")).scalar_one()
    assert stored.token_sha256 == sha256_hex(token)
    assert token not in repr(stored.__dict__)


def test_a_raw_token_in_a_cookie_authorises_nothing(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    """The pre-session cookie held the bearer token itself: it is no credential any more."""
    run = RunFactory(waiting_input=True)
    db.commit()
    token = issue_token(sessions, "ava", Role.APPROVER)
    browser = app.test_client()
    browser.set_cookie("kodo_token", token)
    assert browser.get(f"/ui/runs/{run.id}").status_code == 303
    assert browser.get(f"/runs/{run.id}").status_code == 401
    assert browser.post(f"/runs/{run.id}/approve-plan").status_code == 401


def test_only_an_approver_may_request_changes_and_only_an_admin_may_retry(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    failed = RunFactory(status="failed", last_step="CompileST", next_action="none")
    db.commit()
    submitter = _as(app, issue_token(sessions, "sam", Role.SUBMITTER))
    approver = _as(app, issue_token(sessions, "ava", Role.APPROVER))
    admin = _as(app, issue_token(sessions, "ada", Role.ADMIN))
    changes = {"comment": "smaller, please"}
    assert submitter.post(f"/runs/{run.id}/request-changes", json=changes).status_code == 403
    assert submitter.post(f"/runs/{failed.id}/retry").status_code == 403
    refused = approver.post(f"/runs/{failed.id}/retry")
    assert refused.status_code == 403
    assert "may not operate" in refused.get_json()["error"]["message"]
    # Past the role check, the command itself answers (this failed row has no checkpoint).
    assert admin.post(f"/runs/{failed.id}/retry").status_code == 409
    assert approver.post(f"/runs/{run.id}/request-changes", json={}).status_code == 400
