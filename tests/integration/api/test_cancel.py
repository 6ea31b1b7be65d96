"""POST /runs/<id>/cancel: one locked transition, then the in-flight calls are aborted."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session

from shared.db.models import Run
from tests.factories import RunFactory
from tests.integration.api.conftest import sent_tasks

pytestmark = pytest.mark.integration


def test_cancelling_an_active_run_ends_it_and_asks_a_worker_to_abort_its_calls(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    reply = client.post(f"/runs/{run.id}/cancel")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json() == {"runId": run.id, "status": "cancelled"}
    db.expire_all()
    stored = db.get(Run, run.id)
    assert stored is not None
    assert stored.status == "cancelled"
    assert stored.finished_at is not None
    assert [(t.task, t.args) for t in sent_tasks(broker)] == [("kodo.abort_calls", [run.id])]


def test_cancelling_twice_is_accepted_and_sends_nothing_more(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    run = RunFactory()
    db.commit()
    assert client.post(f"/runs/{run.id}/cancel").status_code == 200
    assert client.post(f"/runs/{run.id}/cancel").status_code == 200
    assert len(sent_tasks(broker)) == 1


def test_an_ended_run_cannot_be_cancelled(client: FlaskClient, db: Session) -> None:
    run = RunFactory(succeeded=True)
    db.commit()
    reply = client.post(f"/runs/{run.id}/cancel")
    assert reply.status_code == 409
    assert reply.get_json()["error"]["code"] == "conflict"


def test_cancel_refuses_unknown_runs_and_unknown_fields(client: FlaskClient, db: Session) -> None:
    run = RunFactory()
    db.commit()
    assert client.post("/runs/no-such-run/cancel").status_code == 404
    refused = client.post(f"/runs/{run.id}/cancel", json={"force": True})
    assert refused.status_code == 400
    assert "force" in refused.get_json()["error"]["details"]
