"""Approving and rejecting a plan: recorded once, guarded by status and digest."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.supervisor import free_port
from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.models import PlanApproval, Run
from shared.hashing import sha256_hex
from shared.queue import make_celery
from shared.service.tokens import Role
from tests.factories import IntentFactory, RunFactory

from .conftest import NOW, Sent, issue_token, sent_tasks

pytestmark = pytest.mark.integration


def approvals(db: Session, run_id: str) -> list[PlanApproval]:
    db.expire_all()
    return list(db.scalars(select(PlanApproval).where(PlanApproval.run_id == run_id)))


def test_approving_a_waiting_plan_records_it_and_dispatches_apply_once(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(
        f"/runs/{run.id}/approve-plan", json={"approver": "ann", "planSha256": run.plan_sha256}
    )

    assert response.status_code == 200
    [row] = approvals(db, run.id)
    assert (row.decision, row.approver, row.plan_sha256) == ("approved", "ann", run.plan_sha256)
    assert row.approved_at is not None
    assert response.get_json() == {
        "accepted": True,
        "runId": run.id,
        "planSha256": run.plan_sha256,
        "approver": "ann",
        "approvedAt": row.approved_at.isoformat(),
    }
    assert row.approved_at != NOW, "the database's time, not the API host's clock"
    assert sent_tasks(broker) == [Sent(task="kodo.ApplyPatchST", args=[run.id])]
    db.expire_all()
    moved = db.get(Run, run.id)
    assert moved is not None
    assert moved.status == "applying"
    assert row.dispatched_at is not None
    again = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})
    assert again.status_code == 200, "a repeated approval is accepted again"
    assert len(sent_tasks(broker)) == 1, "and dispatches nothing more"


def test_an_approval_naming_no_approver_is_by_the_tokens_owner(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})

    assert response.status_code == 200
    assert response.get_json()["approver"] == "ann"


@pytest.mark.parametrize("body", [{}, {"planSha256": None}], ids=["{}", "null"])
def test_an_approval_that_names_no_plan_is_a_400_and_approves_nothing(
    client: FlaskClient, db: Session, broker: Redis, body: dict[str, None] | None
) -> None:
    """Without the digest of the plan the approver read, whatever plan is current when
    the request lands (a newer revision nobody saw) would be approved."""
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(f"/runs/{run.id}/approve-plan", json=body)

    assert response.status_code == 400, response.get_json()
    assert "planSha256" in response.get_json()["error"]["details"]
    assert client.post(f"/runs/{run.id}/approve-plan").status_code == 415, "no body at all"
    assert approvals(db, run.id) == []
    assert sent_tasks(broker) == []


def test_approving_twice_is_accepted_twice_and_stored_once(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    body = {"approver": "ann", "plan_sha256": run.plan_sha256}

    first = client.post(f"/runs/{run.id}/approve-plan", json=body)
    second = client.post(f"/runs/{run.id}/approve-plan", json=body)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json() == first.get_json()
    assert len(approvals(db, run.id)) == 1


def test_approving_a_different_digest_is_a_409_and_records_nothing(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(
        f"/runs/{run.id}/approve-plan", json={"plan_sha256": sha256_hex("another plan")}
    )

    assert response.status_code == 409
    assert response.get_json()["error"]["details"] == {"currentPlanSha256": run.plan_sha256}
    assert approvals(db, run.id) == []


def test_a_digest_that_is_not_64_hex_digits_is_a_400(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(f"/runs/{run.id}/approve-plan", json={"plan_sha256": "abc"})

    assert response.status_code == 400
    assert "planSha256" in response.get_json()["error"]["details"]


def test_approving_a_run_that_is_still_compiling_is_a_409(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    run = RunFactory()
    db.commit()

    response = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": "a" * 64})

    assert response.status_code == 409
    assert approvals(db, run.id) == []
    assert sent_tasks(broker) == []


def test_approving_an_unknown_run_is_a_404(client: FlaskClient) -> None:
    response = client.post("/runs/no-such-run/approve-plan", json={"planSha256": "a" * 64})

    assert response.status_code == 404


def test_rejecting_a_plan_ends_the_run_as_rejected(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    response = client.post(f"/runs/{run.id}/reject-plan", json={"comment": "too risky"})

    assert response.status_code == 200
    assert response.get_json() == {
        "accepted": True,
        "runId": run.id,
        "status": "rejected",
        "approver": "ann",
    }
    db.expire_all()
    stored = db.get(Run, run.id)
    assert stored is not None
    assert (stored.status, stored.finished_at) == ("rejected", NOW)
    [row] = approvals(db, run.id)
    assert (row.decision, row.comment, row.approved_at) == ("rejected", "too risky", None)


def test_approving_after_a_rejection_is_a_409(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    client.post(f"/runs/{run.id}/reject-plan")

    response = client.post(f"/runs/{run.id}/approve-plan", json={"planSha256": run.plan_sha256})

    assert response.status_code == 409


def test_the_submitter_may_not_approve_their_own_run(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="ann"))
    db.commit()

    refused = client.post(f"/runs/{run.id}/approve-plan", json={"plan_sha256": run.plan_sha256})

    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert "self-approval is refused" in error["message"]
    assert "KODO_ALLOW_SELF_APPROVAL" in error["message"]
    assert error["details"] == {"rule": ["no_self_approval"]}
    assert approvals(db, run.id) == []


def test_the_submitter_may_still_reject_their_own_run(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True, intent=IntentFactory(submitted_by="ann"))
    db.commit()

    assert client.post(f"/runs/{run.id}/reject-plan").status_code == 200


def test_an_approval_whose_send_fails_is_still_accepted_and_left_to_the_reconciler(
    settings: Settings, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    broker_away = make_celery(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    app = create_app(settings, clock=FixedClock(NOW), celery=broker_away)
    approver = app.test_client()
    token = issue_token(sessions, "ann", Role.ADMIN)
    try:
        response = approver.post(
            f"/runs/{run.id}/approve-plan",
            json={"planSha256": run.plan_sha256},
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        state_of(app).close()
        broker_away.close()

    assert response.status_code == 200, "the approval committed: the request succeeded"
    db.expire_all()
    moved = db.get(Run, run.id)
    assert moved is not None
    assert moved.status == "applying", "moved, and the reconciler re-sends a step never entered"
