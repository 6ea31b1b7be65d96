"""Red-team helper-131: one token signs in without limit, a database row each time.

``POST /ui/login`` is outside every rate limit (KODO_INTENT_RATE counts intents only)
and stores a ``ui_sessions`` row per sign-in; nothing caps a token's sessions and
nothing ever deletes a row (ended or expired ones included). The sign-in form's CSRF
cookie stays valid for an hour, so one GET of the form lets a script replay the POST:
measured ~450 sign-ins a second from one test client, each a committed insert, with
the lowest role (a submitter). That grows ``app.ui_sessions`` (and its unique index)
without bound: a low-privilege token filling kodo's own database.

The safe outcome: a token's sign-ins are bounded (refused 429 past a rate, or the
oldest sessions dropped past a count), so 120 sign-ins in a burst leave at most
``MAX_ROWS`` rows for the token.
"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import ApiToken, UiSession
from shared.service.tokens import Role
from shared.service.ui_sessions import SESSIONS_PER_TOKEN
from tests.integration.api.conftest import issue_token
from tests.integration.api.test_ui_sessions import csrf_in, signed_in

pytestmark = pytest.mark.integration

ATTEMPTS = 120
MAX_ROWS = 50


def test_one_token_cannot_store_sign_ins_without_bound(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    token = issue_token(sessions, "sam", Role.SUBMITTER)
    browser = app.test_client()
    csrf = csrf_in(browser.get("/ui/login"))
    codes: list[int] = []
    for _ in range(ATTEMPTS):
        browser.set_cookie("kodo_login_csrf", csrf, path="/ui/login")  # the form's, replayed
        browser.delete_cookie("kodo_session")  # a fresh browser each time: nothing ended
        reply = browser.post("/ui/login", data={"token": token, "csrf_token": csrf})
        codes.append(reply.status_code)

    token_id = db.scalar(select(ApiToken.id).where(ApiToken.name == "sam"))
    rows = db.scalar(
        select(func.count()).select_from(UiSession).where(UiSession.token_id == token_id)
    )
    assert rows is not None
    assert rows <= MAX_ROWS, (
        f"{ATTEMPTS} sign-ins by one submitter token stored {rows} ui_sessions rows"
        f" (answers {sorted(set(codes))}): no rate, no cap, no pruning"
    )


def test_a_sign_in_past_the_tokens_sessions_ends_its_oldest_and_keeps_the_newest(
    app: Flask, sessions: sessionmaker[Session]
) -> None:
    token = issue_token(sessions, "sue", Role.SUBMITTER)
    browsers = [signed_in(app, token) for _ in range(SESSIONS_PER_TOKEN + 1)]
    first, newest = browsers[0], browsers[-1]
    assert first.get("/ui/runs").status_code == 303, "the oldest session ended: back to sign-in"
    assert newest.get("/ui/runs").status_code == 200
    assert browsers[1].get("/ui/runs").status_code == 200, "the others are kept"
