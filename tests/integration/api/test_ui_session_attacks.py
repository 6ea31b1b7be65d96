"""Red-team attacks on the web sessions, each asserting the safe outcome: a planted
cookie, another session's CSRF token, a token re-issued under the same name with
another role, a submitter posting the approve form, a decision posted with HEAD or
with only the cookie on the JSON API."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import Role, create_token, revoke_token
from shared.service.uow import UnitOfWork
from tests.factories import IntentFactory, RunFactory
from tests.integration.api.conftest import NOW, issue_token
from tests.integration.api.test_ui_sessions import approvals, csrf_in, session_cookie, signed_in

pytestmark = pytest.mark.integration


def test_a_planted_session_cookie_is_replaced_at_sign_in_never_adopted(
    app: Flask, sessions: sessionmaker[Session]
) -> None:
    """Session fixation: the attacker plants an id, the victim signs in with it set."""
    browser = app.test_client()
    planted = "attacker-chosen-session-id-" + "x" * 20
    browser.set_cookie("kodo_session", planted)
    form = browser.get("/ui/login")
    token = issue_token(sessions, "vic", Role.APPROVER)
    browser.post("/ui/login", data={"token": token, "csrf_token": csrf_in(form)})

    assert session_cookie(browser) not in (None, planted)
    attacker = app.test_client()
    attacker.set_cookie("kodo_session", planted)
    assert attacker.get("/ui/runs").status_code == 303, "the planted id signs no one in"


def test_one_sessions_csrf_token_does_not_work_for_another_session(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    mallory = signed_in(app, issue_token(sessions, "mal", Role.APPROVER))
    victim = signed_in(app, issue_token(sessions, "vee", Role.APPROVER))
    mallorys_csrf = csrf_in(mallory.get(f"/ui/runs/{run.id}"))

    forged = victim.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": mallorys_csrf, "plan_sha256": run.plan_sha256},
    )
    assert forged.status_code == 403
    assert approvals(db, run.id) == []


def test_a_session_dies_with_its_token_even_if_the_name_returns_with_another_role(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    """Role change by re-issue: an old approver session must not act for the new token."""
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "rita", Role.SUBMITTER))
    page = browser.get(f"/ui/runs/{run.id}")
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "rita", now=NOW)
        create_token(uow, "rita", Role.ADMIN)

    late = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )
    assert late.status_code == 303
    assert late.headers["Location"].startswith("/ui/login")
    assert approvals(db, run.id) == []


def test_the_approve_form_is_not_a_safe_method_a_head_or_get_decides_nothing(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "hal", Role.APPROVER))
    for method in ("GET", "HEAD"):
        reply = browser.open(
            f"/ui/runs/{run.id}/approve?plan_sha256={run.plan_sha256}", method=method
        )
        assert reply.status_code == 405
    assert approvals(db, run.id) == []


def test_a_run_started_by_an_approver_on_their_own_intent_is_still_self_approval(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    """The rule follows who submitted the intent; another token's name is another person."""
    intent = IntentFactory(submitted_by="ada")
    run = RunFactory(waiting_input=True, intent=intent)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ada", Role.ADMIN))
    page = browser.get(f"/ui/runs/{run.id}")
    own = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )
    assert own.status_code == 403
    assert approvals(db, run.id) == []
