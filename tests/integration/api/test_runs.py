"""Starting a run dispatches CompileST once, after commit; its status reads back as JSON."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.db.events import CHANNEL, conninfo_of
from shared.db.models import Run, StepRun
from shared.domain.run_machine import NextAction, RunStatus, Start, StepId, transition
from shared.domain.step_contract import step_contract_version
from shared.version import app_version
from tests.factories import IntentFactory, RunFactory

from .conftest import NOW, Sent, sent_tasks

pytestmark = pytest.mark.integration


def test_starting_a_run_is_202_and_sends_one_compile_message(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    intent = IntentFactory()
    db.commit()

    response = client.post(f"/intents/{intent.id}/run")

    assert response.status_code == 202
    assert response.get_json() == {"runId": intent.id, "status": "compiling"}
    assert sent_tasks(broker) == [Sent(task="kodo.CompileST", args=[intent.id])]


def test_a_run_is_stored_where_its_start_moves_it_in_one_change(
    client: FlaskClient, db: Session, broker: Redis, database_url: str
) -> None:
    """No reader ever saw a run ``queued``: it is made in the status the machine's start
    names, one row change and one notification, not an insert and a move."""
    intent = IntentFactory()
    db.commit()
    start = transition(RunStatus.QUEUED, Start())
    with psycopg.connect(conninfo_of(database_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        client.post(f"/intents/{intent.id}/run")
        told = [json.loads(n.payload) for n in listener.notifies(timeout=0.5)]

    run = db.get(Run, intent.id)
    assert run is not None
    assert (run.status, run.last_step, run.next_action) == (
        start.to_status.value,
        StepId.COMPILE.value,
        NextAction.RUN_COMPILE.value,
    )
    assert run.event_seq == 1
    assert run.updated_at == NOW
    mine = [(n["status"], n["seq"]) for n in told if n["run_id"] == intent.id]
    assert mine == [(RunStatus.COMPILING.value, 1)]


def test_starting_a_run_twice_returns_the_same_run_and_sends_nothing_more(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    intent = IntentFactory()
    db.commit()

    first = client.post(f"/intents/{intent.id}/run", json={})
    second = client.post(f"/intents/{intent.id}/run", json={})

    assert second.status_code == 202
    assert second.get_json()["runId"] == first.get_json()["runId"]
    assert len(sent_tasks(broker)) == 1


def test_starting_an_ended_run_again_is_a_409(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    run = RunFactory(succeeded=True)
    db.commit()

    response = client.post(f"/intents/{run.intent_id}/run")

    assert response.status_code == 409
    assert sent_tasks(broker) == []


def test_a_started_run_takes_its_intents_budget_and_a_repeat_reports_where_it_is(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    intent = IntentFactory(budget_usd_micro=2_500_000, budget_tokens=40_000)
    db.commit()
    client.post(f"/intents/{intent.id}/run")
    db.execute(update(Run).where(Run.id == intent.id).values(status="waiting_input"))
    db.commit()

    again = client.post(f"/intents/{intent.id}/run")

    assert (again.status_code, again.get_json()) == (
        202,
        {"runId": intent.id, "status": "waiting_input"},
    )
    run = db.get(Run, intent.id)
    assert run is not None
    assert (run.budget_usd_micro, run.budget_tokens, run.retry_count) == (2_500_000, 40_000, 0)
    assert len(sent_tasks(broker)) == 1


def test_starting_a_run_for_an_unknown_intent_is_a_404(client: FlaskClient, broker: Redis) -> None:
    response = client.post("/intents/no-such-intent/run")

    assert response.status_code == 404
    assert sent_tasks(broker) == []


def test_starting_a_run_with_an_unknown_option_is_a_400(
    client: FlaskClient, db: Session, broker: Redis
) -> None:
    intent = IntentFactory()
    db.commit()

    response = client.post(f"/intents/{intent.id}/run", json={"fast": True})

    assert response.status_code == 400
    assert sent_tasks(broker) == []


def test_a_started_run_records_the_running_code_version_and_step_contract(
    client: FlaskClient, db: Session
) -> None:
    intent = IntentFactory()
    db.commit()
    client.post(f"/intents/{intent.id}/run")

    body = client.get(f"/runs/{intent.id}").get_json()

    assert body["appVersion"] == app_version()
    assert "+" in body["appVersion"], "the build, not just the package version"
    assert body["contractVersion"] == step_contract_version()
    assert (body["status"], body["lastStep"], body["nextAction"]) == (
        "compiling",
        "CompileST",
        "run:CompileST",
    )


def test_run_status_lists_the_run_and_its_steps(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True, branch="kodo/x")
    db.add(
        StepRun(
            run_id=run.id,
            step_id="CompileST",
            status="succeeded",
            deliveries=2,
            started_at=NOW,
            finished_at=NOW + timedelta(seconds=3),
            duration_ms=3000,
        )
    )
    db.commit()

    response = client.get(f"/runs/{run.id}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["runId"] == body["intentId"] == run.id
    assert body["status"] == "waiting_input"
    assert body["nextAction"] == "await:approval"
    assert body["planSha256"] == run.plan_sha256
    assert (body["branch"], body["finishedAt"]) == ("kodo/x", None)
    # retryCount is written only by kodo retrying: see tests/integration/worker/test_retry_count.py
    assert body["steps"] == [
        {
            "stepId": "CompileST",
            "status": "succeeded",
            "round": 1,
            "deliveries": 2,
            "durationMs": 3000,
            "startedAt": NOW.isoformat(),
            "finishedAt": (NOW + timedelta(seconds=3)).isoformat(),
            "error": None,
        }
    ]


@pytest.mark.parametrize("run_id", ["no-such-run", "x" * 65, "bad%00id"])
def test_an_unknown_or_malformed_run_id_is_a_404(client: FlaskClient, run_id: str) -> None:
    response = client.get(f"/runs/{run_id}")

    assert response.status_code == 404
    assert "error" in response.get_json()
