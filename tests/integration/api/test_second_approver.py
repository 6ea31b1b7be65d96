"""Red-team helper-118: a second approval of a plan someone else already approved.

The decision is stored once per (run, plan) and a repeat of the same decision is
answered with that record. An approval by *another* principal is not a repeat: nothing
of theirs is recorded, yet they are answered 200 ``accepted`` and audited ``done``; and
when that principal is the run's submitter, the self-approval rule (403
``no_self_approval``) is never applied at all.
"""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import Role
from tests.factories import IntentFactory, RunFactory

from .conftest import issue_token

pytestmark = pytest.mark.integration


def _as(app: Flask, sessions: sessionmaker[Session], name: str, role: Role):  # type: ignore[no-untyped-def]
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issue_token(sessions, name, role)}"
    return client


def test_the_submitter_approving_after_another_approver_is_refused_as_self_approval(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="sam"))
    db.commit()
    bob = _as(app, sessions, "bob", Role.APPROVER)
    sam = _as(app, sessions, "sam", Role.APPROVER)

    assert (
        bob.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256}).status_code
        == 200
    )
    own = sam.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})

    assert own.status_code == 403, (own.status_code, own.get_json())
    assert own.get_json()["error"]["details"]["rule"] == ["no_self_approval"]


def test_a_second_approver_is_told_the_plan_was_approved_by_someone_else(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="sam"))
    db.commit()
    bob = _as(app, sessions, "bob", Role.APPROVER)
    cy = _as(app, sessions, "cy", Role.APPROVER)

    assert (
        bob.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256}).status_code
        == 200
    )
    second = cy.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})

    assert second.status_code == 409, (second.status_code, second.get_json())
    assert second.get_json()["error"]["details"]["rule"] == ["decision_recorded"]
