"""Red-team helper-112: the UI's form posts carry text the JSON API would refuse (clean_text).

The JSON API's ``request-changes`` refuses a comment with a NUL (schemas.clean_text:
"Validation stops here anything Postgres ... would fail on ... so bad input is a 400,
never a 500"). The run page's form reads ``comment`` straight from the form and hands
it to the command, which checks only blank and length (rounds.comment_refusal).
"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import Role
from tests.factories import RunFactory
from tests.integration.api.conftest import issue_token
from tests.integration.api.test_ui_sessions import approvals, csrf_in, signed_in, with_plan

pytestmark = pytest.mark.integration


def test_a_request_for_changes_from_the_page_with_a_nul_in_its_comment_is_refused_not_a_500(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = with_plan(db, RunFactory(waiting_input=True))
    browser = signed_in(app, issue_token(sessions, "ava", Role.APPROVER))
    page = browser.get(f"/ui/runs/{run.id}")

    reply = browser.post(
        f"/ui/runs/{run.id}/request-changes",
        data={
            "csrf_token": csrf_in(page),
            "plan_sha256": run.plan_sha256,
            "comment": "add tests\x00please",
        },
    )

    assert reply.status_code == 400, (reply.status_code, reply.get_data(as_text=True)[:200])
    assert approvals(db, run.id) == []
