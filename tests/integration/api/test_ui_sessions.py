"""The approval page signs in with a server-side session and decides through CSRF-checked forms.

The browser's cookie holds a random session id (only its sha256 is stored), never the
token; every form carries the session's CSRF token; signing out or revoking the token
ends the session's power; the JSON API's state changes still need the bearer header.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from services.api import events
from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.engine import unit_of_work
from shared.db.models import ApiToken, PlanApproval, Run, StepRun, UiSession
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex
from shared.service.tokens import Role, revoke_token
from shared.service.uow import UnitOfWork
from tests.factories import IntentFactory, PlanApprovalFactory, RunFactory
from tests.integration.api.conftest import NOW, Sent, issue_token, sent_tasks

pytestmark = pytest.mark.integration

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(page: TestResponse) -> str:
    found = _CSRF.search(page.get_data(as_text=True))
    assert found is not None, "the page carries a CSRF token in its form"
    return found.group(1)


def session_cookie(browser: FlaskClient) -> str | None:
    cookie = browser.get_cookie("kodo_session")
    return None if cookie is None else cookie.value


def signed_in(app: Flask, token: str) -> FlaskClient:
    """A browser that opened the sign-in page and signed in with ``token``."""
    browser = app.test_client()
    form = browser.get("/ui/login")
    reply = browser.post("/ui/login", data={"token": token, "csrf_token": csrf_in(form)})
    assert reply.status_code == 303, reply.get_data(as_text=True)
    return browser


def with_plan(db: Session, run: Run) -> Run:
    """Store a plan card as the run's plan: the run's digest becomes its bytes' sha256."""
    content = json.dumps({"design": "d", "files": [], "risks": [], "tests": []}).encode()
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=content,
        media_type="application/json",
    )
    run.plan_sha256 = sha256_hex(content)
    db.commit()
    return run


def approvals(db: Session, run_id: str) -> list[PlanApproval]:
    db.expire_all()
    return list(db.scalars(select(PlanApproval).where(PlanApproval.run_id == run_id)))


def test_signing_in_keeps_a_random_session_id_in_the_cookie_never_the_token(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    token = issue_token(sessions, "ava", Role.APPROVER)
    browser = app.test_client()
    form = browser.get("/ui/login")
    reply = browser.post(
        "/ui/login",
        data={"token": token, "csrf_token": csrf_in(form), "next": "https://evil.example/"},
    )

    assert reply.status_code == 303
    assert reply.headers["Location"] == "/ui/runs", "never an open redirect"
    [cookie] = [c for c in reply.headers.getlist("Set-Cookie") if c.startswith("kodo_session=")]
    assert token not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie, "plain http on loopback: a Secure cookie would never return"
    session_id = session_cookie(browser)
    assert session_id is not None
    [row] = db.scalars(select(UiSession)).all()
    assert row.session_sha256 == sha256_hex(session_id)
    assert session_id not in repr(row.__dict__)
    assert row.expires_at == NOW + timedelta(seconds=Settings().ui_session_ttl_s)
    assert browser.get("/ui/runs").status_code == 200


def test_the_session_cookie_is_secure_over_https(
    app: Flask, sessions: sessionmaker[Session]
) -> None:
    token = issue_token(sessions, "ava", Role.APPROVER)
    browser = app.test_client()
    form = browser.get("/ui/login", base_url="https://kodo.example")
    reply = browser.post(
        "/ui/login",
        data={"token": token, "csrf_token": csrf_in(form)},
        base_url="https://kodo.example",
    )
    [cookie] = [c for c in reply.headers.getlist("Set-Cookie") if c.startswith("kodo_session=")]
    assert "Secure" in cookie


def test_sign_in_refuses_an_unknown_token_and_a_form_from_elsewhere(
    app: Flask, sessions: sessionmaker[Session]
) -> None:
    token = issue_token(sessions, "ava", Role.APPROVER)
    browser = app.test_client()
    form = browser.get("/ui/login")
    wrong = browser.post("/ui/login", data={"token": "kodo_wrong", "csrf_token": csrf_in(form)})
    assert wrong.status_code == 401
    assert "Unknown or revoked token." in wrong.get_data(as_text=True)

    forged = app.test_client().post("/ui/login", data={"token": token, "csrf_token": "x"})
    assert forged.status_code == 403, "a sign-in form posted from another site is refused"
    assert session_cookie(app.test_client()) is None


def test_a_signed_in_approver_approves_from_the_page_without_the_token(
    app: Flask, sessions: sessionmaker[Session], db: Session, broker: Redis
) -> None:
    run = with_plan(db, RunFactory(waiting_input=True))
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))

    page = browser.get(f"/ui/runs/{run.id}")
    html = page.get_data(as_text=True)
    assert 'action="/ui/runs/' in html
    assert f'name="plan_sha256" value="{run.plan_sha256}"' in html
    reply = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )

    assert reply.status_code == 303
    assert reply.headers["Location"] == f"/ui/runs/{run.id}"
    [row] = approvals(db, run.id)
    assert (row.decision, row.approver, row.plan_sha256) == ("approved", "ava", run.plan_sha256)
    assert sent_tasks(broker) == [Sent(task="kodo.ApplyPatchST", args=[run.id])]
    after = browser.get(f"/ui/runs/{run.id}").get_data(as_text=True)
    assert '<strong id="decided-by">ava</strong>' in after


def test_a_signed_in_approver_rejects_from_the_page(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")

    reply = browser.post(
        f"/ui/runs/{run.id}/reject",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )

    assert reply.status_code == 303
    db.expire_all()
    stored = db.get(Run, run.id)
    assert stored is not None
    assert stored.status == "rejected"


@pytest.mark.parametrize("csrf", [None, "", "not-the-sessions-token"])
def test_a_form_post_without_the_sessions_csrf_token_changes_nothing(
    app: Flask, sessions: sessionmaker[Session], db: Session, csrf: str | None
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    data = {"plan_sha256": run.plan_sha256 or ""}
    if csrf is not None:
        data["csrf_token"] = csrf

    reply = browser.post(f"/ui/runs/{run.id}/approve", data=data)

    assert reply.status_code == 403
    assert reply.mimetype == "text/html"
    assert "CSRF" in reply.get_data(as_text=True)
    assert approvals(db, run.id) == []


def test_the_session_never_authorises_the_json_apis_state_changes(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))

    assert browser.get(f"/runs/{run.id}").status_code == 200, "reads are fine"
    assert browser.post(f"/runs/{run.id}/approve-plan").status_code == 401
    assert browser.post(f"/runs/{run.id}/cancel").status_code == 401
    assert approvals(db, run.id) == []


def test_signing_out_ends_the_session_for_good(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    session_id = session_cookie(browser)
    assert session_id is not None
    page = browser.get("/ui/runs")
    assert 'id="sign-out"' in page.get_data(as_text=True)

    assert browser.post("/ui/logout").status_code == 403, "sign-out needs the CSRF token too"
    out = browser.post("/ui/logout", data={"csrf_token": csrf_in(page)})

    assert out.status_code == 303
    assert out.headers["Location"] == "/ui/login"
    assert session_cookie(browser) is None
    replayed = app.test_client()
    replayed.set_cookie("kodo_session", session_id)
    assert replayed.get("/ui/runs").status_code == 303, "the old id signs no one in"
    [row] = db.scalars(select(UiSession)).all()
    assert row.ended_at == NOW


def test_revoking_the_token_ends_its_sessions_power(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")

    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "ava", now=NOW)

    assert browser.get(f"/ui/runs/{run.id}").status_code == 303
    assert browser.get(f"/runs/{run.id}").status_code == 401
    late = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )
    assert late.status_code == 303
    assert late.headers["Location"] == f"/ui/login?next=/ui/runs/{run.id}"
    assert approvals(db, run.id) == []


def test_a_revoked_token_loses_its_session_even_if_the_row_was_not_ended(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    """Authentication reads the token on every request; ending sessions is a second lock."""
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    with unit_of_work(sessions) as s:
        s.execute(update(UiSession).values(ended_at=None))
        s.execute(update(ApiToken).values(revoked_at=NOW))
    assert browser.get("/ui/runs").status_code == 303


def test_an_expired_session_signs_no_one_in(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    with unit_of_work(sessions) as s:
        s.execute(update(UiSession).values(expires_at=NOW - timedelta(seconds=1)))
    assert browser.get("/ui/runs").status_code == 303


def test_a_changed_plan_is_refused_on_the_page_with_the_reason(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")

    reply = browser.post(
        f"/ui/runs/{run.id}/approve", data={"csrf_token": csrf_in(page), "plan_sha256": "0" * 64}
    )

    assert reply.status_code == 409
    assert "the plan changed" in reply.get_data(as_text=True)
    assert approvals(db, run.id) == []


def test_a_submitter_signed_in_sees_no_buttons_and_may_not_post_them(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "sam", Role.SUBMITTER))
    page = browser.get(f"/ui/runs/{run.id}")
    assert 'id="approve"' not in page.get_data(as_text=True)
    assert "may not approve or reject" in page.get_data(as_text=True)

    reply = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )
    assert reply.status_code == 403
    assert approvals(db, run.id) == []


def test_the_submitter_may_not_approve_their_own_run_on_the_page(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="ann"))
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ann", Role.ADMIN))
    page = browser.get(f"/ui/runs/{run.id}")

    reply = browser.post(
        f"/ui/runs/{run.id}/approve",
        data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
    )

    assert reply.status_code == 403
    assert "self-approval is refused" in reply.get_data(as_text=True)
    assert approvals(db, run.id) == []


def test_every_response_forbids_framing_sniffing_and_referrers(
    app: Flask, client: FlaskClient, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    for reply in (
        browser.get(f"/ui/runs/{run.id}"),
        browser.get("/ui/runs"),
        app.test_client().get("/ui/login"),
        client.get(f"/runs/{run.id}"),
        client.get("/docs"),
        app.test_client().get("/healthz"),
    ):
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        csp = reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp


def test_the_pages_script_and_style_carry_the_responses_nonce(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(status="applying", plan_sha256=sha256_hex("plan"))
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    reply = browser.get(f"/ui/runs/{run.id}")
    nonce = re.search(r"script-src 'nonce-([^']+)'", reply.headers["Content-Security-Policy"])
    assert nonce is not None
    html = reply.get_data(as_text=True)
    assert f'<script nonce="{nonce.group(1)}"' in html
    assert f'<style nonce="{nonce.group(1)}">' in html
    assert "style=" not in html, "no inline style attribute (the CSP would block it)"


def test_self_approval_is_allowed_when_the_operator_says_so(
    settings: Settings, sessions: sessionmaker[Session], db: Session, broker: Redis
) -> None:
    allowing = create_app(replace(settings, allow_self_approval=True), clock=FixedClock(NOW))
    try:
        run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="ann"))
        db.commit()
        browser = signed_in(allowing, issue_token(sessions, "ann", Role.ADMIN))
        page = browser.get(f"/ui/runs/{run.id}")
        reply = browser.post(
            f"/ui/runs/{run.id}/approve",
            data={"csrf_token": csrf_in(page), "plan_sha256": run.plan_sha256},
        )
        assert reply.status_code == 303
        assert [a.approver for a in approvals(db, run.id)] == ["ann"]
    finally:
        state_of(allowing).close()


def test_a_signed_in_approver_raises_a_stopped_runs_budget_from_the_page(
    app: Flask, sessions: sessionmaker[Session], db: Session, broker: Redis
) -> None:
    run = with_plan(
        db,
        RunFactory(
            status="waiting_input",
            next_action="await:budget",
            last_step="CompileST",
            budget_usd_micro=1_000,
            error="budget: the next provider call was not sent",
        ),
    )
    db.add(StepRun(run_id=run.id, step_id="CompileST", status="failed", started_at=NOW, fence=1))
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")
    html = page.get_data(as_text=True)
    assert 'id="budget-stop"' in html
    assert 'id="raise-budget"' in html

    too_little = browser.post(
        f"/ui/runs/{run.id}/budget", data={"csrf_token": csrf_in(page), "budget_usd": "0.5"}
    )
    assert too_little.status_code == 409
    assert "still would not fit" in too_little.get_data(as_text=True)
    junk = browser.post(
        f"/ui/runs/{run.id}/budget", data={"csrf_token": csrf_in(page), "budget_usd": "lots"}
    )
    assert junk.status_code == 400
    raised = browser.post(
        f"/ui/runs/{run.id}/budget", data={"csrf_token": csrf_in(page), "budget_usd": "5"}
    )

    assert raised.status_code == 303
    assert sent_tasks(broker) == [Sent(task="kodo.CompileST", args=[run.id])]
    db.expire_all()
    again = db.get(Run, run.id)
    assert again is not None
    assert (again.status, again.budget_usd_micro) == ("compiling", 5_000_000)


def test_a_signed_in_approver_answers_the_agents_question_from_the_page(
    app: Flask, sessions: sessionmaker[Session], db: Session, broker: Redis
) -> None:
    run = with_plan(
        db, RunFactory(status="waiting_input", next_action="await:answer", last_step="DecideST")
    )
    PlanApprovalFactory(run=run, approver="ann")
    db.add(
        StepRun(
            run_id=run.id,
            step_id="DecideST",
            status="succeeded",
            started_at=NOW,
            fence=1,
            output={"next_action": "escalate", "question": "Cover <negatives>?", "argv": []},
        )
    )
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")
    assert '<pre class="design" id="question">Cover &lt;negatives&gt;?</pre>' in page.get_data(
        as_text=True
    )

    asked = re.search(r'name="question_sha256" value="([0-9a-f]{64})"', page.get_data(as_text=True))
    assert asked is not None, "the form names the question it answers"
    reply = browser.post(
        f"/ui/runs/{run.id}/answer",
        data={"csrf_token": csrf_in(page), "comment": "No.", "question_sha256": asked.group(1)},
    )

    assert reply.status_code == 303
    assert sent_tasks(broker) == [Sent(task="kodo.DecideST", args=[run.id])]
    db.expire_all()
    decide = db.execute(select(StepRun).where(StepRun.run_id == run.id)).scalar_one()
    assert decide.round == 2
    assert decide.round_input == {
        "kind": "answer",
        "answered_by": "ava",
        "exchanges": [{"question": "Cover <negatives>?", "answer": "No."}],
    }


def test_signing_out_ends_the_sessions_open_event_stream(
    app: Flask, sessions: sessionmaker[Session], db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run page follows its run with the session's cookie; signing out (or revoking
    the token) ends that stream at its next keepalive, not when the run ends."""
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.05)
    run = RunFactory(waiting_input=True)
    db.commit()
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get("/ui/runs")
    streamed = browser.get(f"/runs/{run.id}/events", buffered=False)
    assert streamed.status_code == 200
    chunks = streamed.iter_encoded()
    seen = ""
    while "event: run" not in seen:
        seen += next(chunks).decode()

    browser.post("/ui/logout", data={"csrf_token": csrf_in(page)})
    rest = "".join(chunk.decode() for chunk in chunks)  # to the stream's end

    assert rest.endswith('event: error\ndata: {"error": "credential_revoked"}\n\n'), rest
    assert "event: run" not in rest
