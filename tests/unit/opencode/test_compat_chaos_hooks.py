"""The compat server's hooks for the chaos suite: prompts counted per title, and garbage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from standins.oc_compat.app import GARBAGE, CompatConfig, CompatState, create_app

PLAN_SCHEMA = {"type": "object", "properties": {"design": {"type": "string"}}}


def _client() -> FlaskClient:
    return create_app(CompatState(CompatConfig(seed=1))).test_client()


def _prompt(client: FlaskClient, title: str, text: str, directory: str) -> Any:
    session = client.post("/session", json={"title": title}, query_string={"directory": directory})
    body = {
        "agent": "plan",
        "model": {"providerID": "kodo", "modelID": "kodo-scripted"},
        "parts": [{"type": "text", "text": text}],
        "format": {"type": "json_schema", "schema": PLAN_SCHEMA},
    }
    return client.post(
        f"/session/{session.get_json()['id']}/message",
        json=body,
        query_string={"directory": directory},
    )


def test_stats_count_prompts_per_session_title(tmp_path: Path) -> None:
    client = _client()
    _prompt(client, "kodo CompileST r1 #1", "Intent: a", str(tmp_path))
    _prompt(client, "kodo CompileST r1 #1", "Intent: a", str(tmp_path))
    _prompt(client, "kodo CompileST r1 #2", "Intent: a", str(tmp_path))
    stats = client.get("/__kodo/stats").get_json()
    assert stats["by_title"] == {"kodo CompileST r1 #1": 2, "kodo CompileST r1 #2": 1}
    client.post("/__kodo/reset")
    assert client.get("/__kodo/stats").get_json()["by_title"] == {}


def test_the_garbage_directive_answers_200_with_a_body_that_is_not_json(tmp_path: Path) -> None:
    reply = _prompt(
        client := _client(), "kodo CompileST r2 #1", "Intent: b [oc:garbage]", str(tmp_path)
    )
    assert reply.status_code == 200
    assert reply.get_data(as_text=True) == GARBAGE
    assert client.get("/__kodo/stats").get_json()["prompts"] == 1
