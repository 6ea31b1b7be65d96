"""The real client over real HTTP against the compat server on a free port."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.domain.contracts import (
    BUILD_OUTPUT_SCHEMA,
    EDIT_REPORT_SCHEMA,
    PLAN_OUTPUT_SCHEMA,
    ContractViolation,
    validate_answer,
)
from shared.hashing import sha256_hex
from shared.opencode.client import ModelRef, OpenCodeClient, PromptReply
from shared.opencode.diagnosis import DAEMON_UNEXPECTED
from shared.opencode.errors import (
    CONFIG_HINT,
    OpenCodeAborted,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTransientError,
    StructuredOutputMissing,
)
from shared.opencode.messages import prompt_message_id
from standins.oc_compat import running_server
from tests.unit.opencode.captures import capture

MODEL = ModelRef("kodo", "kodo-scripted")
NO_TOOLS = {"bash": False, "webfetch": False}


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "schema": schema, "retryCount": 1}


def git(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        input=stdin,
        text=True,
        capture_output=True,
        check=False,
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_server(seed=0) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[OpenCodeClient]:
    with OpenCodeClient(base_url, timeout_s=10) as oc:
        oc.wait_healthy(deadline_s=5)
        yield oc


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "README.md").write_text("# Calc\n")
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "test_calc.py").write_text("import unittest\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    assert git(tmp_path, "commit", "-qm", "init").returncode == 0
    return tmp_path


@pytest.fixture
def session(client: OpenCodeClient, repo: Path) -> str:
    return str(client.create_session(directory=str(repo), title="kodo-test")["id"])


def ask(
    client: OpenCodeClient,
    session: str,
    repo: Path,
    text: str,
    schema: dict[str, Any] | None = None,
    agent: str = "plan",
    model: ModelRef = MODEL,
    message_id: str | None = None,
) -> PromptReply:
    return client.prompt(
        session,
        directory=str(repo),
        agent=agent,
        model=model,
        text=text,
        tools=NO_TOOLS,
        format=schema_format(schema) if schema is not None else None,
        message_id=message_id,
    )


def test_health_answers_like_the_daemon(client: OpenCodeClient) -> None:
    assert client.health() == {"healthy": True, "version": "1.18.33"}


def test_a_new_session_has_the_daemons_keys_and_the_requested_permission(
    client: OpenCodeClient, repo: Path
) -> None:
    rules = [{"permission": "bash", "pattern": "*", "action": "deny"}]
    created = client.create_session(directory=str(repo), title="t", permission=rules)
    assert set(created) == set(capture("session.create.response.json")) | {"permission"}
    assert created["id"].startswith("ses_")
    assert created["directory"] == str(repo.resolve())
    assert created["permission"] == rules
    assert created["cost"] == 0
    fetched = client.get_session(created["id"], directory=str(repo))
    assert fetched["id"] == created["id"]
    assert client.session_children(created["id"], directory=str(repo)) == []


def test_a_plan_prompt_returns_a_valid_plan_output_with_the_capture_shape(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    reply = ask(client, session, repo, "Teach calc.py to subtract", PLAN_OUTPUT_SCHEMA)
    plan = validate_answer(PLAN_OUTPUT_SCHEMA, reply.structured)
    assert plan["files"][0] == {
        "path": "calc.py",
        "change": "modify",
        "why": "The request names calc.py.",
    }
    expected = capture("prompt.structured.response.json")
    assert list(reply.info) == list(expected["info"])
    assert [p["type"] for p in reply.parts] == [p["type"] for p in expected["parts"]]
    assert reply.parts[1]["state"]["metadata"] == {"valid": True}
    assert reply.info["finish"] == "tool-calls"
    assert reply.parts[-1]["tokens"] == reply.info["tokens"]
    assert reply.tokens.total == reply.info["tokens"]["total"] > 2400


def test_the_same_seed_and_prompt_give_the_same_answer(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    first = ask(client, session, repo, "Teach calc.py to subtract", PLAN_OUTPUT_SCHEMA)
    again = ask(client, session, repo, "Teach calc.py to subtract", PLAN_OUTPUT_SCHEMA)
    assert first.structured == again.structured
    assert first.info["tokens"] == again.info["tokens"]
    assert first.message_id != again.message_id


def test_session_totals_grow_by_each_calls_cost_and_tokens(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    one = ask(client, session, repo, "first", PLAN_OUTPUT_SCHEMA)
    two = ask(client, session, repo, "second")
    totals = client.get_session(session, directory=str(repo))
    assert totals["cost"] == pytest.approx(one.cost + two.cost)
    assert totals["tokens"]["input"] == one.tokens.input + two.tokens.input
    assert totals["tokens"]["cache"]["read"] == one.tokens.cache_read + two.tokens.cache_read
    assert two.structured is None
    assert two.text.startswith("kodo-scripted")


def test_the_build_agent_edits_the_directory_and_reports_the_files_it_changed(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    plan = validate_answer(
        PLAN_OUTPUT_SCHEMA,
        ask(client, session, repo, "Teach calc.py to subtract", PLAN_OUTPUT_SCHEMA).structured,
    )
    plan["files"].append({"path": "notes/CHANGES.md", "change": "add", "why": "log it"})
    text = f"Implement the plan.\n--- plan.json ---\n{json.dumps(plan)}\n--- end plan.json ---\n"
    prompt_id = prompt_message_id(f"compat-build-{time.time_ns()}")
    reply = ask(
        client, session, repo, text, EDIT_REPORT_SCHEMA, agent="build", message_id=prompt_id
    )
    report = validate_answer(EDIT_REPORT_SCHEMA, reply.structured)
    assert sorted(report["files"]) == ["calc.py", "notes/CHANGES.md"]
    changed = git(repo, "status", "--porcelain", "--untracked-files=all").stdout
    assert " M calc.py" in changed
    assert "?? notes/CHANGES.md" in changed
    edits = [
        p
        for m in client.earlier_turn_messages(
            session, directory=str(repo), prompt_id=prompt_id, reply_id=reply.info["id"]
        )
        for p in m["parts"]
        if p.get("type") == "tool"
    ]
    assert {(p["tool"], p["state"]["status"], p["state"]["input"]["filePath"]) for p in edits} == {
        ("edit", "completed", f"{repo}/calc.py"),
        ("write", "completed", f"{repo}/notes/CHANGES.md"),
    }


def test_the_scripted_agent_never_edits_outside_the_directory(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    plan = {"files": [{"path": "../escape.txt", "change": "add", "why": "x"}]}
    text = f"Implement.\n--- plan.json ---\n{json.dumps(plan)}\n--- end plan.json ---\n"
    reply = ask(client, session, repo, text, EDIT_REPORT_SCHEMA, agent="build")
    assert validate_answer(EDIT_REPORT_SCHEMA, reply.structured)["files"] == []
    assert not (repo.parent / "escape.txt").exists()


def test_decide_returns_an_argv_for_the_repository(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    reply = ask(client, session, repo, "Choose verification", BUILD_OUTPUT_SCHEMA, agent="build")
    build = validate_answer(BUILD_OUTPUT_SCHEMA, reply.structured)
    assert build["argv"][:3] == ["python3", "-m", "unittest"]
    failing = ask(client, session, repo, "[oc:fail-verify]", BUILD_OUTPUT_SCHEMA, agent="build")
    assert failing.structured["argv"][0] == "python3"
    assert "sys.exit(3)" in failing.structured["argv"][2]


def test_any_other_schema_gets_a_minimal_valid_instance(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    schema = capture("prompt.structured.request.json")["format"]["schema"]
    reply = ask(client, session, repo, "Review calc.py; answer via the schema.", schema)
    assert validate_answer(schema, reply.structured)["verdict"] == "ok"


def test_abort_interrupts_a_slow_prompt_which_then_raises_aborted(
    client: OpenCodeClient, base_url: str, session: str, repo: Path
) -> None:
    outcome: list[BaseException] = []

    def slow() -> None:
        with OpenCodeClient(base_url, timeout_s=10) as other:
            try:
                ask(other, session, repo, "[oc:slow=5000] take your time", PLAN_OUTPUT_SCHEMA)
            except OpenCodeError as exc:
                outcome.append(exc)

    worker = threading.Thread(target=slow)
    started = time.monotonic()
    worker.start()
    while not httpx.get(f"{base_url}/__kodo/stats").json()["in_flight"].get(session):
        assert time.monotonic() - started < 3, "the slow prompt never arrived"
        time.sleep(0.01)
    assert client.abort(session, directory=str(repo)) is True
    worker.join(timeout=5)
    assert time.monotonic() - started < 3
    [error] = outcome
    assert isinstance(error, OpenCodeAborted)
    assert isinstance(error, OpenCodeTransientError)
    assert error.reply is not None
    assert error.reply.cost == 0.0
    assert list(error.reply.info) == list(capture("prompt.aborted.response.json")["info"])


def test_a_slow_prompt_that_is_not_aborted_answers_normally(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    started = time.monotonic()
    reply = ask(client, session, repo, "[oc:slow=150] plan it", PLAN_OUTPUT_SCHEMA)
    assert time.monotonic() - started >= 0.15
    validate_answer(PLAN_OUTPUT_SCHEMA, reply.structured)


def test_an_unknown_session_is_a_permanent_not_found(client: OpenCodeClient, repo: Path) -> None:
    with pytest.raises(OpenCodePermanentError) as caught:
        client.get_session("ses_missing", directory=str(repo))
    assert caught.value.status == 404
    assert caught.value.name == "NotFoundError"
    with pytest.raises(OpenCodePermanentError):
        ask(client, "ses_missing", repo, "hello")


def test_a_malformed_body_is_a_permanent_bad_request(base_url: str, session: str) -> None:
    response = httpx.post(f"{base_url}/session/{session}/message", json={"parts": "nope"})
    assert response.status_code == 400
    assert response.json()["name"] == "BadRequest"


@pytest.mark.parametrize(
    ("agent", "model", "named"),
    [
        ("reviewer", MODEL, "no agent 'reviewer'"),
        ("plan", ModelRef("kodo", "other-model"), "no model 'kodo/other-model'"),
    ],
)
def test_an_unknown_agent_or_model_is_a_config_error_that_names_it(
    client: OpenCodeClient, session: str, repo: Path, agent: str, model: ModelRef, named: str
) -> None:
    with pytest.raises(OpenCodeConfigError) as caught:
        ask(client, session, repo, "hello", agent=agent, model=model)
    assert (caught.value.status, caught.value.name) == (500, "UnknownError")
    assert named in str(caught.value)
    assert CONFIG_HINT in str(caught.value)


def test_the_daemons_agents_and_models_are_listed_like_the_real_ones(
    client: OpenCodeClient, repo: Path
) -> None:
    catalogue = client.catalogue(directory=str(repo))
    assert catalogue is not None
    assert {"plan", "build"} <= catalogue.agents
    assert catalogue.models == frozenset({(MODEL.provider_id, MODEL.model_id)})


def test_the_http500_directive_is_a_transient_server_error_not_a_config_error(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    """The same 500 the daemon gives an unknown model, but agent and model exist."""
    with pytest.raises(OpenCodeServerError) as caught:
        ask(client, session, repo, "[oc:http500]", PLAN_OUTPUT_SCHEMA)
    assert (caught.value.status, caught.value.name) == (500, "UnknownError")
    assert caught.value.data["message"] == DAEMON_UNEXPECTED
    assert isinstance(caught.value, OpenCodeTransientError)
    assert not isinstance(caught.value, OpenCodeConfigError)


def test_http500_attempts_fail_the_named_attempts_then_answer(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    text = "[oc:http500-attempts=1] plan it\nkodo-attempt: {n}"
    with pytest.raises(OpenCodeServerError):
        ask(client, session, repo, text.format(n=1), PLAN_OUTPUT_SCHEMA)
    reply = ask(client, session, repo, text.format(n=2), PLAN_OUTPUT_SCHEMA)
    assert isinstance(reply.structured, dict)


SECRET = "s3cret"  # noqa: S105 - a throwaway test server's password


def test_without_the_password_the_server_refuses_with_a_permanent_error(repo: Path) -> None:
    with running_server(seed=0, password=SECRET) as url:
        with OpenCodeClient(url, timeout_s=5) as anonymous, pytest.raises(OpenCodeConfigError):
            anonymous.create_session(directory=str(repo), title="t")
        with OpenCodeClient(url, timeout_s=5, password=SECRET[::-1]) as wrong:
            with pytest.raises(OpenCodePermanentError) as caught:
                wrong.health()
            assert caught.value.status == 401
        with OpenCodeClient(url, timeout_s=5, password=SECRET) as authorized:
            assert authorized.wait_healthy(deadline_s=2)["healthy"] is True


def test_the_invalid_directive_answers_off_schema_but_marked_valid(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    reply = ask(client, session, repo, "[oc:invalid] plan it", PLAN_OUTPUT_SCHEMA)
    assert reply.parts[1]["state"]["metadata"] == {"valid": True}
    with pytest.raises(ContractViolation):
        validate_answer(PLAN_OUTPUT_SCHEMA, reply.structured)


def test_invalid_attempts_turn_valid_after_the_named_attempt(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    for attempt, valid in ((1, False), (2, False), (3, True)):
        text = f"[oc:invalid-attempts=2] plan it\nkodo-attempt: {attempt}"
        structured = ask(client, session, repo, text, PLAN_OUTPUT_SCHEMA).structured
        try:
            validate_answer(PLAN_OUTPUT_SCHEMA, structured)
            assert valid, f"attempt {attempt} should be invalid"
        except ContractViolation:
            assert not valid, f"attempt {attempt} should be valid"


def test_no_structured_raises_structured_output_missing_with_the_billed_reply(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    with pytest.raises(StructuredOutputMissing) as caught:
        ask(client, session, repo, "[oc:no-structured] plan it", PLAN_OUTPUT_SCHEMA)
    reply = caught.value.reply
    assert reply is not None
    assert reply.error_name == "StructuredOutputError"
    assert reply.cost > 0
    assert json.loads(reply.text)["files"]


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("[oc:api-error]", OpenCodePermanentError),
        ("[oc:api-error=retryable]", OpenCodeTransientError),
    ],
)
def test_api_error_directives_map_by_retryability(
    client: OpenCodeClient,
    session: str,
    repo: Path,
    directive: str,
    expected: type[OpenCodeError],
) -> None:
    with pytest.raises(expected) as caught:
        ask(client, session, repo, directive, PLAN_OUTPUT_SCHEMA)
    assert caught.value.name == "APIError"
    assert caught.value.reply is not None
    assert caught.value.reply.parts == []


def test_a_tool_call_lives_in_an_earlier_message_of_the_turn_like_on_the_daemon(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    reply = ask(client, session, repo, "[oc:tool=bash] plan it", PLAN_OUTPUT_SCHEMA)
    assert reply.tool_names == ["StructuredOutput"], "the reply is only the turn's last message"
    earlier = client.earlier_turn_messages(session, directory=str(repo))
    tools = [p["tool"] for m in earlier for p in m["parts"] if p["type"] == "tool"]
    assert tools == ["bash"]
    assert [m["info"]["role"] for m in earlier] == ["assistant"]


def test_a_single_step_turn_has_no_earlier_messages(
    client: OpenCodeClient, session: str, repo: Path
) -> None:
    ask(client, session, repo, "plan it", PLAN_OUTPUT_SCHEMA)
    prompt_id = prompt_message_id(f"compat-again-{time.time_ns()}")
    reply = ask(client, session, repo, "plan it again", PLAN_OUTPUT_SCHEMA, message_id=prompt_id)
    earlier = client.earlier_turn_messages(
        session, directory=str(repo), prompt_id=prompt_id, reply_id=reply.info["id"]
    )
    assert earlier == [], "paging stops at the turn's own prompt, listed by its id"


def test_the_stats_endpoint_counts_prompts_by_session_and_text(
    client: OpenCodeClient, base_url: str, session: str, repo: Path
) -> None:
    assert httpx.post(f"{base_url}/__kodo/reset").json() is True
    ask(client, session, repo, "count me")
    ask(client, session, repo, "count me")
    ask(client, session, repo, "and me")
    stats = httpx.get(f"{base_url}/__kodo/stats").json()
    assert stats["prompts"] == 3
    assert stats["by_session"] == {session: 3}
    assert stats["by_text_sha256"][sha256_hex("count me")] == 2
    assert stats["by_text_sha256"][sha256_hex("and me")] == 1


def test_the_stats_endpoint_keeps_the_peak_of_prompts_held_at_once(
    client: OpenCodeClient, base_url: str, repo: Path
) -> None:
    assert httpx.post(f"{base_url}/__kodo/reset").json() is True
    sessions = [
        str(client.create_session(directory=str(repo), title=f"held-{i}")["id"]) for i in range(3)
    ]
    for sid in sessions:
        client.prompt_async(
            sid,
            directory=str(repo),
            agent="plan",
            model=MODEL,
            text="[oc:slow=60000] hold me",
            tools=NO_TOOLS,
            format=None,
        )
    held = httpx.get(f"{base_url}/__kodo/stats").json()
    assert held["in_flight_total"] == 3
    assert held["in_flight_peak"] == 3
    for sid in sessions:
        assert client.abort(sid, directory=str(repo)) is True
    started = time.monotonic()
    while httpx.get(f"{base_url}/__kodo/stats").json()["in_flight_total"]:
        assert time.monotonic() - started < 10, "an aborted prompt stayed in flight"
        time.sleep(0.01)
    released = httpx.get(f"{base_url}/__kodo/stats").json()
    assert released["in_flight_peak"] == 3, "the peak outlives the prompts"
    assert httpx.post(f"{base_url}/__kodo/reset").json() is True
    assert httpx.get(f"{base_url}/__kodo/stats").json()["in_flight_peak"] == 0
