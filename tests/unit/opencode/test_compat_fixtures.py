"""``[oc:fixture=NAME]``: any plan, patch or build answer, scripted verbatim from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from standins.oc_compat.app import CompatConfig, CompatState, create_app
from standins.oc_compat.directives import parse
from standins.oc_compat.fixtures import FixtureError, fixture_path, kind_of, load_fixture

PLAN_SCHEMA = {"type": "object", "properties": {"design": {"type": "string"}}}
PATCH_SCHEMA = {"type": "object", "properties": {"summary": {}, "files": {}}}
"""The EditReport: a fixture's ``patch`` is what the build agent edits, then reports."""
BUILD_SCHEMA = {"type": "object", "properties": {"argv": {"type": "array"}}}
OFF_SCHEMA_PLAN = {"design": 42, "files": "everything", "extra": ["\x1b[2K"]}


def _client(fixtures: Path | None) -> FlaskClient:
    return create_app(CompatState(CompatConfig(seed=1, fixtures_dir=fixtures))).test_client()


def _ask(client: FlaskClient, text: str, schema: dict[str, Any], directory: Path) -> Any:
    session = client.post("/session", json={"title": "t"}, query_string={"directory": directory})
    body = {
        "agent": "plan",
        "model": {"providerID": "kodo", "modelID": "kodo-scripted"},
        "parts": [{"type": "text", "text": text}],
        "format": {"type": "json_schema", "schema": schema},
    }
    return client.post(
        f"/session/{session.get_json()['id']}/message",
        json=body,
        query_string={"directory": directory},
    )


def _structured(reply: Any) -> Any:
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()["info"]["structured"]


def _write(folder: Path, name: str, value: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(value))


def test_the_fixture_directive_is_read_with_its_name() -> None:
    assert parse("Intent: fix it [oc:fixture=evil-plan_2]").fixture == "evil-plan_2"
    assert parse("Intent: fix it").fixture is None


def test_the_requested_schema_picks_the_kind_of_answer() -> None:
    assert kind_of(PLAN_SCHEMA) == "plan"
    assert kind_of(PATCH_SCHEMA) == "patch"
    assert kind_of(BUILD_SCHEMA) == "build"
    assert kind_of({"type": "object", "properties": {"x": {}}}) is None


@pytest.mark.parametrize("name", ["../secrets", "a/b", "..", "a..b", "", ".hidden", "x\\y"])
def test_a_fixture_name_that_is_not_a_bare_name_fails_loudly(tmp_path: Path, name: str) -> None:
    with pytest.raises(FixtureError, match="bare name"):
        fixture_path(tmp_path, name)


def test_without_a_fixtures_folder_the_directive_fails_loudly() -> None:
    with pytest.raises(FixtureError, match="no fixtures folder"):
        fixture_path(None, "plan")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ("[1, 2]", "must hold an object"),
        ('{"plan": {}, "shell": "rm -rf"}', "unknown kinds"),
    ],
)
def test_a_missing_or_malformed_fixture_fails_loudly(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "bad.json").write_text(content)
    with pytest.raises(FixtureError, match=message):
        load_fixture(tmp_path, "bad")


def test_each_step_kind_is_answered_verbatim_from_the_fixture(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    patch = {"summary": "s", "diff": "--- a/x\n+++ b/x\n"}
    build = {"next_action": "verify", "argv": ["git", "-c", "alias.x=!id", "x"], "reason": "r"}
    _write(fixtures, "all", {"plan": OFF_SCHEMA_PLAN, "patch": patch, "build": build})
    client = _client(fixtures)
    text = "Intent: harmless [oc:fixture=all]"
    assert _structured(_ask(client, text, PLAN_SCHEMA, tmp_path)) == OFF_SCHEMA_PLAN
    report = {"summary": "s", "files": ["x"]}  # the files its diff edits
    assert _structured(_ask(client, text, PATCH_SCHEMA, tmp_path)) == report
    assert _structured(_ask(client, text, BUILD_SCHEMA, tmp_path)) == build


def test_a_kind_the_fixture_lacks_is_answered_as_usual(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    _write(fixtures, "only-build", {"build": {"argv": ["true"]}})
    (tmp_path / "README.md").write_text("# r\n")
    plan = _structured(
        _ask(_client(fixtures), "Intent: [oc:fixture=only-build]", PLAN_SCHEMA, tmp_path)
    )
    assert plan["files"][0]["path"] == "README.md"


def test_fixtures_are_read_on_every_prompt_so_a_test_can_write_them_late(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    client = _client(fixtures)
    _write(fixtures, "late", {"plan": {"design": "first"}})
    assert _structured(_ask(client, "[oc:fixture=late]", PLAN_SCHEMA, tmp_path)) == {
        "design": "first"
    }
    _write(fixtures, "late", {"plan": {"design": "second"}})
    assert _structured(_ask(client, "[oc:fixture=late]", PLAN_SCHEMA, tmp_path)) == {
        "design": "second"
    }


def test_a_broken_fixture_answers_http_500_naming_the_problem(tmp_path: Path) -> None:
    reply = _ask(_client(tmp_path), "Intent: [oc:fixture=../etc/passwd]", PLAN_SCHEMA, tmp_path)
    assert reply.status_code == 500
    assert "[oc:fixture]" in reply.get_json()["data"]["message"]
    missing = _ask(_client(tmp_path), "Intent: [oc:fixture=nope]", PLAN_SCHEMA, tmp_path)
    assert missing.status_code == 500
    assert "cannot read fixture" in missing.get_json()["data"]["message"]
