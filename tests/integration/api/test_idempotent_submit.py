"""POST /intents with an Idempotency-Key: a client may send it again without fear."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Intent, Run
from shared.service.tokens import Role

from .conftest import Sent, issue_token, sent_tasks

pytestmark = pytest.mark.integration


def _intents(db: Session) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Intent)) or 0


def _submit(client: FlaskClient, repo: Path, key: str | None, goal: str = "Add a docstring"):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/intents", json={"repo": str(repo), "goal": goal}, headers=headers)


def test_the_same_request_sent_again_with_its_key_returns_the_first_intent(
    client: FlaskClient, git_repo: Path, db: Session
) -> None:
    first = _submit(client, git_repo, "submit-7f3a")
    again = _submit(client, git_repo, "submit-7f3a")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _intents(db) == 1


def test_without_a_key_each_submit_is_a_new_intent(
    client: FlaskClient, git_repo: Path, db: Session
) -> None:
    assert _submit(client, git_repo, None).status_code == 201
    assert _submit(client, git_repo, None).status_code == 201
    assert _intents(db) == 2


def test_the_same_key_for_another_request_is_a_409_naming_the_rule(
    client: FlaskClient, git_repo: Path, db: Session
) -> None:
    first = _submit(client, git_repo, "k-1")
    other = _submit(client, git_repo, "k-1", goal="Something else entirely")
    assert other.status_code == 409
    error = other.get_json()["error"]
    assert error["details"]["rule"] == ["idempotency_key_reused"]
    assert error["details"]["intent_id"] == [first.get_json()["intentId"]]
    assert _intents(db) == 1


def test_keys_belong_to_their_submitter(
    app: Flask, client: FlaskClient, git_repo: Path, db: Session, sessions: sessionmaker[Session]
) -> None:
    """Another token's identical key is another request: no one reads another's intent."""
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {issue_token(sessions, 'bob', Role.SUBMITTER)}"
    )
    ann_intent = _submit(client, git_repo, "shared-key").get_json()["intentId"]
    bob_intent = _submit(bob, git_repo, "shared-key").get_json()["intentId"]
    assert ann_intent != bob_intent
    assert _intents(db) == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "tab\there", "é-not-ascii"])
def test_a_malformed_key_is_a_400(
    client: FlaskClient, git_repo: Path, db: Session, key: str
) -> None:
    response = _submit(client, git_repo, key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["error"]["details"]
    assert _intents(db) == 0


def test_racing_submits_with_one_key_make_one_intent(
    app: Flask, git_repo: Path, db: Session, sessions: sessionmaker[Session]
) -> None:
    token = issue_token(sessions, "racer", Role.SUBMITTER)
    start = threading.Barrier(6)
    answers: list[tuple[int, str]] = []

    def send() -> None:
        racer = app.test_client()
        racer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        start.wait()
        response = _submit(racer, git_repo, "race-1")
        answers.append((response.status_code, response.get_json()["intentId"]))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [201] * 6
    assert len({intent for _, intent in answers}) == 1
    assert _intents(db) == 1


# -- submit and start in one request (``run: true``) ----------------------------------


def _submit_and_run(client: FlaskClient, repo: Path, key: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        "/intents",
        json={"repo": str(repo), "goal": "Add a docstring", "run": True},
        headers=headers,
    )


def test_run_true_makes_the_intent_and_starts_its_run_in_one_request(
    client: FlaskClient, git_repo: Path, db: Session, broker: Redis
) -> None:
    response = _submit_and_run(client, git_repo)
    assert response.status_code == 201
    body = response.get_json()
    assert body["run"] == {"runId": body["intentId"], "status": "compiling"}
    assert db.get(Run, body["intentId"]) is not None
    assert sent_tasks(broker) == [Sent(task="kodo.CompileST", args=[body["intentId"]])]
    # the intent reads back with its run
    assert client.get(f"/intents/{body['intentId']}").get_json() == body


def test_without_run_the_intent_has_no_run_and_nothing_is_sent(
    client: FlaskClient, git_repo: Path, db: Session, broker: Redis
) -> None:
    body = _submit(client, git_repo, None).get_json()
    assert body["run"] is None
    assert db.get(Run, body["intentId"]) is None
    assert sent_tasks(broker) == []


def test_a_replayed_submit_and_run_returns_the_same_run_and_sends_nothing_more(
    client: FlaskClient, git_repo: Path, db: Session, broker: Redis
) -> None:
    first = _submit_and_run(client, git_repo, "run-once")
    again = _submit_and_run(client, git_repo, "run-once")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert _intents(db) == 1
    assert len(sent_tasks(broker)) == 1


def test_a_replay_asking_for_the_run_starts_it_when_the_first_submit_did_not(
    client: FlaskClient, git_repo: Path, broker: Redis
) -> None:
    first = _submit(client, git_repo, "start-later").get_json()
    again = _submit_and_run(client, git_repo, "start-later").get_json()
    assert again["intentId"] == first["intentId"]
    assert again["run"] == {"runId": first["intentId"], "status": "compiling"}
    assert sent_tasks(broker) == [Sent(task="kodo.CompileST", args=[first["intentId"]])]


def test_run_must_be_a_boolean(client: FlaskClient, git_repo: Path, db: Session) -> None:
    response = client.post("/intents", json={"repo": str(git_repo), "goal": "g", "run": "soon"})
    assert response.status_code == 400
    assert "run" in response.get_json()["error"]["details"]
    assert _intents(db) == 0


def test_a_replay_without_run_still_shows_the_run_the_first_submit_started(
    client: FlaskClient, git_repo: Path, broker: Redis
) -> None:
    first = _submit_and_run(client, git_repo, "shown-again").get_json()
    again = _submit(client, git_repo, "shown-again").get_json()
    assert again["run"] == first["run"]
    assert len(sent_tasks(broker)) == 1
