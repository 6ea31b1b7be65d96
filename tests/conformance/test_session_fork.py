"""``POST /session/{id}/fork`` on the real daemon: why the build step does not fork the plan.

Issue 12 item 3 asked whether the build agent's session could fork the plan session
(so the repository reading is not paid twice) instead of starting fresh, seeded with
the approved plan. Measured here against ``opencode serve`` 1.18.33 over the scripted
LLM (docs/opencode-sessions.md states the figures and the choice):

* kodo's plan session (plan agent, ``format: json_schema``, made by the call protocol
  itself) cannot be forked: 500 (the message-list decoding bug of API notes 5.1). The
  only fork that succeeds is one cut at the plan's user message, and it holds nothing.
* A plan session sent WITHOUT ``format`` (kodo never makes one) forks; the structured
  build turn then works in the fork, but the fork keeps neither the plan session's
  permission nor its agent, carries the plan turn's token totals (billing a turn by its
  session's totals, as the call protocol did then, would bill the plan again),
  re-sends the plan turn to the model on every request of the build turn, and cannot
  itself be forked once the build turn has run; and its inherited plan prompt can list
  inside the build turn, which the turn inspection then refuses.

Real daemon only: the compat server has no ``/fork`` route, and these are findings
about the real daemon, not shapes our stand-in must copy.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import OpenCodeCall
from shared.domain.contracts import EDIT_REPORT_SCHEMA, PLAN_OUTPUT_SCHEMA, validate_answer
from shared.domain.prompts import apply_prompt, compile_prompt, plan_brief
from shared.opencode.calls import StructuredCall
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodePermanentError
from shared.opencode.tools import permission_rules, tools_map
from shared.opencode.turn_inspection import TurnInspector, usage_of
from tests.conformance.conftest import MODEL, Backend
from tests.factories import RunFactory
from tests.postgres_calls import calls_on_postgres

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.parametrize("backend", ["real"], indirect=True),
]

GOAL = "Add a docstring to calc.py"
PLAN: dict[str, Any] = {
    "design": "Document the module.",
    "files": [{"path": "calc.py", "change": "modify", "why": "The intent names calc.py."}],
    "risks": [],
    "tests": ["python -m pytest"],
}
TOKEN_KEYS = ("input_tokens", "output_tokens", "reasoning_tokens", "cache_read_tokens")


@pytest.fixture
def run_id(db: Session) -> str:
    run = RunFactory()
    db.commit()
    return str(run.id)


@pytest.fixture
def client(backend: Backend) -> Iterator[OpenCodeClient]:
    with backend.client(60.0) as made:
        yield made


@pytest.fixture
def clean_repo(backend: Backend) -> Iterator[None]:
    yield
    subprocess.run(["git", "checkout", "--", "."], cwd=backend.repo, check=True, timeout=30)


def _http(backend: Backend, method: str, path: str, body: object = None) -> httpx.Response:
    """A raw request: kodo's client has no fork, by decision (see the module docstring)."""
    auth = ("opencode", backend.password) if backend.password else None
    return httpx.request(
        method,
        f"{backend.url}{path}",
        params={"directory": str(backend.repo)},
        json=body,
        auth=auth,
        timeout=30.0,
    )


def _fork(backend: Backend, session_id: str, message_id: str | None = None) -> httpx.Response:
    body = {} if message_id is None else {"messageID": message_id}
    return _http(backend, "POST", f"/session/{session_id}/fork", body)


def _llm_stats(scripted_llm: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(
        f"{scripted_llm.removesuffix('/v1')}/__kodo/stats", timeout=5.0
    ).json()
    return answer


def _tool_uses(messages: list[dict[str, Any]]) -> list[str]:
    return [str(p.get("tool")) for m in messages for p in m["parts"] if p.get("type") == "tool"]


def test_kodos_plan_session_cannot_be_forked_except_empty(
    backend: Backend, sessions: sessionmaker[Session], run_id: str
) -> None:
    """The plan session as the call protocol makes it: fork answers 500 wherever the cut
    keeps the structured user message; cut before it, the fork is an empty session."""
    prompt = compile_prompt(GOAL, 1, [])
    call = StructuredCall(
        run_id, "CompileST", 1, "plan", prompt, PLAN_OUTPUT_SCHEMA, str(backend.repo)
    )
    with backend.client(60.0) as client:
        wrapper = calls_on_postgres(
            client, sessions, timeout_s=60.0, model=MODEL, keep_sessions=True
        )
        try:
            wrapper.prompt_structured(call)
        finally:
            wrapper.close()
        with sessions() as s:
            row = s.execute(
                select(OpenCodeCall).where(OpenCodeCall.op_key == call.op_key)
            ).scalar_one()
        assert row.session_id is not None
        assert row.response is not None
        plan_session, answer_id = row.session_id, row.response["info"]["id"]
        user_id = row.response["info"]["parentID"]

        for cut in (None, answer_id):
            forked = _fork(backend, plan_session, cut)
            assert forked.status_code == 500, forked.text
            assert forked.json()["name"] == "UnknownError"

        empty = _fork(backend, plan_session, user_id)
        assert empty.status_code == 200, empty.text
        fork_id = empty.json()["id"]
        listed = _http(backend, "GET", f"/session/{fork_id}/message")
        assert (listed.status_code, listed.json()) == (200, [])
        tokens = client.get_session(fork_id, directory=str(backend.repo))["tokens"]
        assert tokens["input"] == 0, "nothing of the plan turn came along"


def test_a_fork_of_an_unstructured_plan_session_costs_more_than_a_fresh_session(
    backend: Backend,
    client: OpenCodeClient,
    sessions: sessionmaker[Session],
    run_id: str,
    scripted_llm: str,
    clean_repo: None,
) -> None:
    """The counterfactual: a plan session sent without ``format`` (so it forks), then the
    same structured build prompt in its fork and in a fresh session seeded with the plan."""
    directory = str(backend.repo)
    planned = client.create_session(
        directory=directory,
        title="kodo CompileST fork-probe #1",
        permission=permission_rules("plan"),
    )
    plan_session = str(planned["id"])
    client.prompt(
        plan_session,
        directory=directory,
        agent="plan",
        model=MODEL,
        text=compile_prompt(f"{GOAL} [oc:tool=read@calc.py]", 1, []),  # the repository reading
        tools=tools_map("plan"),
        format=None,
    )
    inherited = usage_of(client.get_session(plan_session, directory=directory))

    forked = _fork(backend, plan_session)
    assert forked.status_code == 200, forked.text
    fork = forked.json()
    fork_id = str(fork["id"])
    assert fork["title"] == "kodo CompileST fork-probe #1 (fork #1)"
    assert "parentID" not in fork, "a fork is no child"
    assert client.session_children(plan_session, directory=directory) == []
    assert "permission" not in fork, "the plan session's deny-by-default rules are not copied"
    assert "agent" not in fork
    carried = usage_of(client.get_session(fork_id, directory=directory))
    assert {k: carried[k] for k in TOKEN_KEYS} == {k: inherited[k] for k in TOKEN_KEYS}, (
        "a fork's totals start at its parent's: billing a turn by its session's totals"
        " bills the plan again"
    )
    patched = _http(
        backend, "PATCH", f"/session/{fork_id}", {"permission": permission_rules("build")}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["permission"] == permission_rules("build")

    prompt = apply_prompt(GOAL, plan_brief(PLAN), 1, [])
    before = _llm_stats(scripted_llm)
    reply = client.prompt(
        fork_id,
        directory=directory,
        agent="build",
        model=MODEL,
        text=prompt,
        tools=tools_map("build"),
        format={"type": "json_schema", "schema": EDIT_REPORT_SCHEMA, "retryCount": 1},
    )
    after_fork = _llm_stats(scripted_llm)
    assert validate_answer(EDIT_REPORT_SCHEMA, reply.structured)["files"] == ["calc.py"]
    inspector = TurnInspector(client)
    try:
        turn = inspector.inspect(
            fork_id, directory, str(reply.info["parentID"]), str(reply.info["id"])
        )
    finally:
        inspector.close()
    # The fork's copied messages do not always list in the order they were made: the
    # inherited plan prompt (no format) may show inside the build turn, which the
    # inspection refuses (it cannot tell where the turn began). Either that, or it
    # stops at the build prompt's 400 with the turn's own tool uses; never fewer.
    if isinstance(turn.earlier, OpenCodePermanentError):
        said = str(turn.earlier)
        assert "did not send" in said or "not kodo's prompt" in said, said
    else:
        assert _tool_uses(turn.earlier) == ["read", "edit"], (
            "turn inspection stops at the build prompt (the 400 on its format),"
            " not in the inherited plan turn"
        )
    fork_totals = usage_of(client.get_session(fork_id, directory=directory))
    assert _fork(backend, fork_id).status_code == 500, "after a structured turn, no more forks"
    subprocess.run(["git", "checkout", "--", "."], cwd=backend.repo, check=True, timeout=30)

    fresh_call = StructuredCall(
        run_id, "ApplyPatchST", 1, "build", prompt, EDIT_REPORT_SCHEMA, directory
    )
    wrapper = calls_on_postgres(client, sessions, timeout_s=60.0, model=MODEL, keep_sessions=True)
    try:
        fresh = wrapper.prompt_structured(fresh_call)
    finally:
        wrapper.close()
    after_fresh = _llm_stats(scripted_llm)
    assert fresh.answer["files"] == ["calc.py"]

    fork_requests = after_fork["chat_requests"] - before["chat_requests"]
    fresh_requests = after_fresh["chat_requests"] - after_fork["chat_requests"]
    fork_bytes = after_fork["request_bytes"] - before["request_bytes"]
    fresh_bytes = after_fresh["request_bytes"] - after_fork["request_bytes"]
    print(
        f"\nbuild turn, {fork_requests} model requests in the fork, {fresh_requests} fresh"
        f"\n  bytes sent to the model: fork {fork_bytes}, fresh {fresh_bytes}"
        f" (+{fork_bytes - fresh_bytes}, ~{(fork_bytes - fresh_bytes) // 4} tokens at 4 bytes)"
        f"\n  plan turn inherited: {inherited}"
        f"\n  the fork's totals: {fork_totals}"
        f"\n                     fresh {fresh.usage}"
    )
    assert fork_requests == fresh_requests == 3, "read, edit, StructuredOutput either way"
    assert fork_bytes > fresh_bytes, "the fork re-sends the plan turn on every request"
    for key in TOKEN_KEYS:
        assert fork_totals[key] == inherited[key] + fresh.usage[key], (
            f"{key}: the scripted model bills the build turn alike (it reads only the last"
            " user text); the fork's totals add the plan turn on top"
        )
