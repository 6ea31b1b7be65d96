"""``kodo webhook list`` and ``kodo webhook test`` on real Postgres and a real receiver."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.cli.main import cli
from services.worker.webhooks import send_webhooks
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.models import Run, WebhookAttempt
from shared.domain.run_machine import RunStatus, StepFailed, StepId, transition
from shared.domain.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from shared.domain.webhooks import endpoint as make_endpoint
from shared.service.webhooks import record_run_event
from tests.factories import RunFactory
from tests.integration.service.test_webhooks import Ports
from tests.integration.service.webhook_receiver import Answer, receiver_on_free_port, serving

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "cli-receiver-secret!"  # noqa: S105 - a test key
FAILED = transition(RunStatus.EXECUTING, StepFailed(StepId.EXECUTE))


def kodo(tmp_path: Path, database_url: str, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        [*args[:2], "--home", str(tmp_path), *args[2:]],
        env={"DATABASE_URL": database_url, **env},
        catch_exceptions=False,
    )
    return result.exit_code, result.output


def test_webhook_list_shows_each_attempt_with_its_code_error_and_next_attempt(
    db: Session, sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    run: Run = RunFactory(status="failed", next_action="none", last_step="ExecuteST")
    db.commit()
    record_run_event(db, run.id, FAILED, NOW)
    db.commit()
    receiver = receiver_on_free_port()
    ports = Ports(
        replace(Settings(), webhook=make_endpoint(receiver.url, SECRET, "global"), random_seed=3),
        FixedClock(NOW),
        sessions,
    )
    send_webhooks(ports)  # refused: nothing listens
    ports.clock.advance(3600)
    receiver.answer = Answer(status=202)
    with serving(receiver):
        send_webhooks(ports)

    code, out = kodo(tmp_path, database_url, "webhook", "list", "--run", run.id)

    assert code == 0, out
    lines = [line for line in out.splitlines() if run.id in line]
    assert len(lines) == 2, out
    assert "ConnectError" in lines[0]
    assert "retry at 2026-03-01T12:" in lines[0]
    assert "202" in lines[1]
    assert "delivered" in lines[1]
    code, listed = kodo(tmp_path, database_url, "webhook", "list", "--run", run.id, "--json")
    [delivery] = json.loads(listed)
    assert (delivery["event"], delivery["status"], delivery["attempts"]) == (
        "failed",
        "delivered",
        2,
    )
    assert [t["statusCode"] for t in delivery["tries"]] == [None, 202]


def test_webhook_list_shows_control_and_bidi_characters_in_an_error_as_text(
    db: Session, sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    run: Run = RunFactory(status="failed", next_action="none", last_step="ExecuteST")
    db.commit()
    record_run_event(db, run.id, FAILED, NOW)
    db.commit()
    receiver = receiver_on_free_port()
    ports = Ports(
        replace(Settings(), webhook=make_endpoint(receiver.url, SECRET, "global")),
        FixedClock(NOW),
        sessions,
    )
    send_webhooks(ports)
    hostile = "refused \x1b[2J\x1b]8;;https://evil\x07click\u202etxt.exe"
    db.execute(update(WebhookAttempt).values(error=hostile))  # whatever an error may quote
    db.commit()

    code, out = kodo(tmp_path, database_url, "webhook", "list")

    assert code == 0, out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\x1b[2J" in out
    assert "\\u202e" in out


def test_webhook_test_sends_a_signed_sample_and_prints_the_answer(
    database_url: str, tmp_path: Path
) -> None:
    receiver = receiver_on_free_port()
    env = {"KODO_WEBHOOK_URL": receiver.url, "KODO_WEBHOOK_SECRET": SECRET}
    with serving(receiver):
        code, out = kodo(tmp_path, database_url, "webhook", "test", **env)

    assert code == 0, out
    [got] = receiver.got
    verify(SECRET, got.headers[SIGNATURE_HEADER], got.body, now=int(datetime.now(UTC).timestamp()))
    body = json.loads(got.body)
    assert body["test"] is True
    assert got.headers[EVENT_HEADER] == "waiting_input"
    assert f"test delivery {got.headers[DELIVERY_HEADER]} (waiting_input)" in out
    assert "HTTP 204" in out


def test_webhook_test_says_when_the_receiver_is_down_or_refuses(
    database_url: str, tmp_path: Path
) -> None:
    receiver = receiver_on_free_port()
    env = {"KODO_WEBHOOK_URL": receiver.url, "KODO_WEBHOOK_SECRET": SECRET}
    code, out = kodo(tmp_path, database_url, "webhook", "test", **env)
    assert code == 1
    assert "no answer" in out
    assert "ConnectError" in out

    receiver.answer = Answer(status=401)
    with serving(receiver):
        code, out = kodo(tmp_path, database_url, "webhook", "test", **env)
    assert code == 1
    assert "HTTP 401" in out


def test_webhook_test_without_a_webhook_names_the_settings(
    database_url: str, tmp_path: Path
) -> None:
    code, out = kodo(tmp_path, database_url, "webhook", "test")
    assert code == 1
    assert "KODO_WEBHOOK_URL" in out
