"""A whole local kodo with a webhook configured: a real run that waits for approval, then
succeeds, notifies a real receiver of each, signed, and every attempt is recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from devstack.kodo_procs import Stack
from shared.domain.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from tests.e2e.conftest import Api, e2e_stack
from tests.integration.service.webhook_receiver import (
    Receiver,
    receiver_on_free_port,
    serving,
)
from tests.waiting import wait_until

SECRET = "e2e-webhook-secret-0123"  # noqa: S105 - a test key


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hooks = receiver_on_free_port()
    with serving(hooks):
        yield hooks


@pytest.fixture(scope="module")
def stack(
    database_url: str,
    redis_url: str,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The e2e stack (tests/e2e/conftest.py) with the receiver as the global webhook."""
    extra = {
        "KODO_WEBHOOK_URL": receiver.url,
        "KODO_WEBHOOK_SECRET": SECRET,
        "KODO_PUBLIC_URL": "https://kodo.example",
    }
    with e2e_stack(database_url, redis_url, tmp_path_factory.mktemp("e2e-webhooks"), extra) as s:
        yield s


def _events(receiver: Receiver, run_id: str) -> list[dict[str, Any]]:
    """The run's events the receiver got, each verified as a receiver must."""
    found = []
    for got in list(receiver.got):
        verify(SECRET, got.headers[SIGNATURE_HEADER], got.body, now=int(time.time()))
        body = json.loads(got.body)
        assert got.headers[EVENT_HEADER] == body["event"]
        assert got.headers[DELIVERY_HEADER] == body["id"]
        if body["run"]["id"] == run_id:
            found.append(body)
    return found


def test_a_run_waiting_for_approval_and_then_succeeding_notifies_the_receiver(
    api: Api, engine: Engine, receiver: Receiver, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test")
    waiting = api.wait_for(run_id, {"waiting_input"})

    [event] = wait_until(lambda: _events(receiver, run_id), 30, "the waiting_input webhook")
    assert event["event"] == "waiting_input"
    assert event["run"]["nextAction"] == "await:approval"
    assert event["run"]["planSha256"] == waiting["planSha256"]
    assert event["links"]["page"] == f"https://kodo.example/ui/runs/{run_id}"

    approved = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"planSha256": waiting["planSha256"]},
        headers=api.bearer("webhook-approver", "approver"),
    )
    assert approved.status_code == 200, approved.text
    api.wait_for(run_id, {"succeeded"})

    def both() -> list[dict[str, Any]] | None:
        found = _events(receiver, run_id)
        return found if len(found) == 2 else None

    events = wait_until(both, 30, "the succeeded webhook")
    assert [e["event"] for e in events] == ["waiting_input", "succeeded"]

    def recorded() -> list[tuple[Any, ...]] | None:
        """The attempts, once both are recorded (after the receiver answered them)."""
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT d.event, d.status, a.attempt, a.status_code, a.outcome"
                    " FROM app.webhook_deliveries d JOIN app.webhook_attempts a"
                    " ON a.delivery_id = d.id WHERE d.run_id = :r ORDER BY a.started_at"
                ),
                {"r": run_id},
            ).all()
        return [tuple(row) for row in rows] if len(rows) == 2 else None

    attempts = wait_until(recorded, 30, "both attempts recorded")
    assert attempts == [
        ("waiting_input", "delivered", 1, 204, "delivered"),
        ("succeeded", "delivered", 1, 204, "delivered"),
    ]
