"""Our client and wrapper against the real daemon and the compat server, same assertions.

Every case runs once per backend (``real``: ``opencode serve`` 1.18.33 over kodo's
scripted LLM; ``compat``: standins.oc_compat). A case that passes on one and fails
on the other is a shape where our compat server, client or wrapper is wrong about
the real daemon.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.oc_daemon.config import AGENT_STEPS
from shared.db.models import OpenCodeCall
from shared.domain.contracts import EDIT_REPORT_SCHEMA, PLAN_OUTPUT_SCHEMA, validate_answer
from shared.opencode.calls import CallFailed, StructuredCall, StructuredResult
from shared.opencode.client import MAX_TURN_STEPS, ModelRef, OpenCodeClient, PromptReply
from shared.opencode.diagnosis import DAEMON_UNEXPECTED
from shared.opencode.errors import CONFIG_HINT, OpenCodeConfigError, OpenCodeError
from shared.opencode.exactly_once import ABORT_S, BILLED_READ_S, ExactlyOnceCalls
from shared.opencode.messages import prompt_message_id
from shared.opencode.tools import permission_rules, tools_map
from shared.opencode.turn_inspection import usage_of
from standins.scripted_llm.script import TOOL_MARKER
from tests.conformance.conftest import MODEL, Backend
from tests.factories import RunFactory
from tests.postgres_calls import calls_on_postgres
from tests.unit.opencode.captures import capture

pytestmark = pytest.mark.conformance

ABORT_GRACE_S = ABORT_S + BILLED_READ_S + 5.0
"""How long past the wrapper's timeout a stalled call may take to be recorded: its
abort and its read of the session's totals may each take their whole bound on a loaded
daemon. Still far short of the stalls below, so the call ended at its own timeout."""
STALL = "[oc:slow=60000]"
"""A stall that outlasts any call's timeout plus ABORT_GRACE_S."""


@pytest.fixture
def run_id(db: Session) -> str:
    run = RunFactory()
    db.commit()
    return str(run.id)


class Wrappers:
    """Makes ExactlyOnceCallss over fresh clients, and closes every client at the end of a test."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.clients: list[OpenCodeClient] = []

    def __call__(
        self,
        backend: Backend,
        *,
        timeout_s: float = 30.0,
        model: ModelRef = MODEL,
        keep_sessions: bool = False,
    ) -> ExactlyOnceCalls:
        client = backend.client(timeout_s)
        self.clients.append(client)
        return calls_on_postgres(
            client, self.sessions, timeout_s=timeout_s, model=model, keep_sessions=keep_sessions
        )


@pytest.fixture
def wrapper(sessions: sessionmaker[Session]) -> Iterator[Wrappers]:
    made = Wrappers(sessions)
    yield made
    for client in made.clients:
        client.close()


def _plan_call(run_id: str, backend: Backend, prompt: str) -> StructuredCall:
    return StructuredCall(
        run_id, "CompileST", 1, "plan", prompt, PLAN_OUTPUT_SCHEMA, str(backend.repo)
    )


def _row(sessions: sessionmaker[Session], op_key: str) -> OpenCodeCall:
    with sessions() as s:
        return s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == op_key)).scalar_one()


def _statuses(backend: Backend) -> dict[str, Any]:
    """``GET /session/status`` of the backend's repository: non-idle sessions only."""
    auth = ("opencode", backend.password) if backend.password else None
    reply = httpx.get(
        f"{backend.url}/session/status",
        params={"directory": str(backend.repo)},
        auth=auth,
        timeout=5.0,
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _wait_idle(backend: Backend, session_id: str, deadline_s: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    statuses = _statuses(backend)
    while session_id in statuses and time.monotonic() < end:
        time.sleep(0.05)
        statuses = _statuses(backend)
    return statuses


def test_health_says_healthy_with_the_daemons_version(backend: Backend) -> None:
    with backend.client() as client:
        assert client.health(timeout_s=10.0) == {"healthy": True, "version": "1.18.33"}


def test_a_new_session_has_the_captured_keys_and_no_parent(backend: Backend) -> None:
    rules = permission_rules("plan")
    with backend.client() as client:
        created = client.create_session(
            directory=str(backend.repo), title="kodo conformance", permission=rules
        )
        children = client.session_children(str(created["id"]), directory=str(backend.repo))
    assert set(created) == set(capture("session.create.response.json")) | {"permission"}
    assert "parentID" not in created
    assert created["permission"] == rules
    assert created["title"] == "kodo conformance"
    assert (created["cost"], created["directory"]) == (0, str(backend.repo))
    assert children == []


def test_a_plan_answer_validates_and_is_recorded_succeeded_with_tokens_and_cost(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Add a docstring to calc.py")
    result = wrapper(backend).prompt_structured(call)
    assert validate_answer(PLAN_OUTPUT_SCHEMA, result.answer) == result.answer
    assert result.answer["files"][0]["path"] == "calc.py"
    row = _row(sessions, call.op_key)
    assert row.status == "succeeded"
    assert row.usage is not None
    assert row.usage["total_tokens"] > 0
    assert row.usage["cost_usd"] > 0
    assert row.response is not None
    info, parts = row.response["info"], row.response["parts"]
    assert set(info) == set(capture("prompt.structured.response.json")["info"])
    assert (info["agent"], info["finish"]) == ("plan", "tool-calls")
    assert [p["type"] for p in parts] == ["step-start", "tool", "step-finish"]
    assert all("snapshot" not in p for p in parts), "kodo's daemon config has snapshot: false"
    assert parts[1]["state"]["metadata"] == {"valid": True}


def test_a_session_after_a_prompt_has_the_captured_keys_and_the_calls_totals(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Explain calc.py")
    result = wrapper(backend, keep_sessions=True).prompt_structured(call)
    row = _row(sessions, result.op_key)
    assert row.session_id is not None
    with backend.client() as client:
        session = client.get_session(row.session_id, directory=str(backend.repo))
    assert set(session) == set(capture("session.get.response.json")) | {"permission"}
    assert session["model"] == {"id": "kodo-scripted", "providerID": "kodo", "variant": "default"}
    assert session["agent"] == "plan"
    assert session["cost"] == pytest.approx(result.usage["cost_usd"])
    assert session["tokens"]["input"] == result.usage["input_tokens"]


@pytest.mark.parametrize(
    "reads", ["", " [oc:tool=read@README.md] [oc:tool=read@calc.py]"], ids=["one-step", "3-step"]
)
def test_a_turns_messages_added_up_are_its_fresh_sessions_totals(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str, reads: str
) -> None:
    """What kodo records for a call (the turn's assistant messages added up, read for
    its rules anyway) is what the daemon's own totals say, to the token and the cent:
    no ``GET /session/{id}`` per call is needed to bill a turn whole."""
    call = _plan_call(run_id, backend, f"Plan a docstring for calc.py{reads}")
    result = wrapper(backend, keep_sessions=True).prompt_structured(call)
    row = _row(sessions, result.op_key)
    assert row.session_id is not None
    assert row.usage is not None
    with backend.client() as client:
        directory = str(backend.repo)
        totals = usage_of(client.get_session(row.session_id, directory=directory))
        client.delete_session(row.session_id, directory=directory)
    tools = [t["tool"] for t in row.response["tools"]] if row.response else []
    assert tools.count("read") == (2 if reads else 0)
    last_step = {"last_step_tokens", "last_step_cost_usd"}  # the turn's newest counted step
    assert {k: v for k, v in row.usage.items() if k not in last_step | {"cost_usd"}} == {
        k: v for k, v in totals.items() if k != "cost_usd"
    }
    assert row.usage["total_tokens"] > 0
    assert row.usage["cost_usd"] == pytest.approx(totals["cost_usd"], rel=1e-9)
    # what a cut would spend again (migration 0032): one step's, the whole turn's if one
    assert 0 < row.usage["last_step_tokens"] <= row.usage["total_tokens"]
    if not reads:
        assert row.usage["last_step_tokens"] == row.usage["total_tokens"]


def test_the_build_agent_edits_the_worktree_with_its_tools_and_reports_the_files(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    """The change is made by edit tool calls in the session's directory (read, then edit,
    on the real daemon), and the answer names the file git shows changed."""
    plan = {"files": [{"path": "calc.py", "change": "modify", "why": "asked"}]}
    prompt = (
        f"Apply the approved plan.\n--- plan.json ---\n{json.dumps(plan)}\n--- end plan.json ---"
    )
    call = StructuredCall(
        run_id, "ApplyPatchST", 1, "build", prompt, EDIT_REPORT_SCHEMA, str(backend.repo)
    )
    try:
        result: StructuredResult = wrapper(backend).prompt_structured(call)
        changed = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=backend.repo,
            text=True,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        assert changed == " M calc.py\n"
        assert result.answer["files"] == ["calc.py"]
        row = _row(sessions, call.op_key)
        assert row.request["agent"] == "build"
        assert row.status == "succeeded"
        assert row.response is not None
        edits = [t for t in row.response["tools"] if t["tool"] == "edit"]
        assert [(t["status"], t["paths"]) for t in edits] == [
            ("completed", [str(backend.repo / "calc.py")])
        ], "the ledger keeps the turn's tool uses: its session is deleted"
        with backend.client() as client, pytest.raises(OpenCodeError) as gone:
            client.get_session(str(row.session_id), directory=str(backend.repo))
        assert gone.value.status == 404
    finally:
        subprocess.run(["git", "checkout", "--", "."], cwd=backend.repo, check=True, timeout=30)


@pytest.mark.parametrize("backend", ["real"], indirect=True)
def test_the_real_daemon_runs_with_auto_compaction_off(backend: Backend) -> None:
    """kodo's config reaches the daemon: it will not summarise a turn and continue it on a
    synthetic user message (the turn inspection would refuse that turn)."""
    auth = ("opencode", backend.password) if backend.password else None
    seen = httpx.get(
        f"{backend.url}/config", params={"directory": str(backend.repo)}, auth=auth, timeout=30
    )
    assert seen.status_code == 200, seen.text
    assert seen.json().get("compaction") == {"auto": False}


@pytest.mark.parametrize("backend", ["real"], indirect=True)
def test_the_real_daemon_caps_kodos_agents_below_the_turn_kodo_reads_whole(
    backend: Backend,
) -> None:
    """Past its ``steps`` an agent must answer in text: a turn never grows past what
    ``earlier_turn_messages`` reads (MAX_TURN_STEPS), so none goes unjudged."""
    auth = ("opencode", backend.password) if backend.password else None
    seen = httpx.get(
        f"{backend.url}/agent", params={"directory": str(backend.repo)}, auth=auth, timeout=30
    )
    assert seen.status_code == 200, seen.text
    steps = {a["name"]: a.get("steps") for a in seen.json() if a["name"] in ("plan", "build")}
    assert steps == {"plan": AGENT_STEPS, "build": AGENT_STEPS}
    assert AGENT_STEPS < MAX_TURN_STEPS - 1


def _plan_session(client: OpenCodeClient, backend: Backend, title: str) -> str:
    """A fresh session under the plan agent's rules, in the backend's repository."""
    made = client.create_session(
        directory=str(backend.repo), title=title, permission=permission_rules("plan")
    )
    return str(made["id"])


def _plan_turn(
    client: OpenCodeClient, backend: Backend, session: str, text: str, prompt_id: str
) -> PromptReply:
    """One plan turn sent as kodo sends it: a format, kodo's tools, its message id."""
    return client.prompt(
        session,
        directory=str(backend.repo),
        agent="plan",
        model=MODEL,
        text=text,
        tools=tools_map("plan"),
        format={"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1},
        message_id=prompt_id,
    )


def test_the_prompts_message_id_is_the_parent_of_every_answer_of_its_turn(
    backend: Backend,
) -> None:
    """kodo names its prompt's user message (``messageID``, time part zero): the daemon
    takes the id, every assistant message of the turn answers it, and it sorts before
    them (the newest message is still the answer), so the turn is told apart by its
    structure. A multi-step turn: two reads, then the answer."""
    client = backend.client(60)
    directory = str(backend.repo)
    session = _plan_session(client, backend, "kodo conformance turn id")
    prompt_id = prompt_message_id(f"conformance-turn-id-{backend.name}-{time.time_ns()}")
    try:
        text = "Plan a docstring for calc.py [oc:tool=read@README.md] [oc:tool=read@calc.py]"
        reply = _plan_turn(client, backend, session, text, prompt_id)
        assert reply.info["parentID"] == prompt_id
        newest = client.last_message(session, directory=directory)
        assert newest is not None
        assert newest.info["id"] == reply.info["id"], "kodo's message sorts before the answer"
        earlier = client.earlier_turn_messages(session, directory=directory, prompt_id=prompt_id)
        assert [m["info"]["parentID"] for m in earlier] == [prompt_id] * len(earlier)
        tools = [p["tool"] for m in earlier for p in m["parts"] if p.get("type") == "tool"]
        assert tools == ["read", "read"]
    finally:
        client.delete_session(session, directory=directory)
        client.close()


def test_a_long_turn_is_read_whole_through_the_daemons_page_cursor(backend: Backend) -> None:
    """Thirteen reads, then the answer: on the real daemon each is a step of its own, so
    the turn is read back over several pages, each before the cursor the last one
    gave (``X-Next-Cursor``) and the last stopped by the daemon's 400 on kodo's prompt.
    Every step comes back once, oldest first, each answering kodo's prompt."""
    client = backend.client(60)
    directory = str(backend.repo)
    session = _plan_session(client, backend, "kodo conformance long turn")
    prompt_id = prompt_message_id(f"conformance-long-turn-{backend.name}-{time.time_ns()}")
    reads = "".join(f" [oc:tool=read@{('README.md', 'calc.py')[n % 2]}]" for n in range(13))
    try:
        reply = _plan_turn(
            client, backend, session, f"Plan a docstring for calc.py{reads}", prompt_id
        )
        earlier = client.earlier_turn_messages(
            session, directory=directory, prompt_id=prompt_id, reply_id=reply.info["id"]
        )
        ids = [m["info"]["id"] for m in earlier]
        assert len(set(ids)) == len(ids), "no step twice"
        assert reply.info["id"] not in ids
        assert [m["info"]["parentID"] for m in earlier] == [prompt_id] * len(earlier)
        tools = [p["tool"] for m in earlier for p in m["parts"] if p.get("type") == "tool"]
        assert tools == ["read"] * 13
        if backend.name == "real":
            assert len(earlier) == 13, "one step per tool call: read over several pages"
    finally:
        client.delete_session(session, directory=directory)
        client.close()


def test_only_a_page_reaching_the_sessions_first_message_is_answered_the_format_400(
    backend: Backend,
) -> None:
    """API notes 5.1, as it really falls: 1.18.33 checks a page against its schema only
    when no older message lies behind it (no cursor), so the format 400 marks a page
    that reaches the session's first message, and a later prompt sent with a ``format``
    is listed like any message. The pager relies on both: a 400 says kodo's prompt (a
    fresh session's first message) is on that page, and a user message inside a turn
    is shown to it, and refused. Here a session of two turns (a read, then the answer,
    each): the second turn is read back to its own prompt, listed by id."""
    client = backend.client(60)
    directory = str(backend.repo)
    session = _plan_session(client, backend, "kodo conformance 400")
    prompts = [prompt_message_id(f"conformance-400-{n}-{time.time_ns()}") for n in range(2)]
    auth = ("opencode", backend.password) if backend.password else None
    try:
        for n, prompt_id in enumerate(prompts):
            text = f"Plan docstring {n} for calc.py [oc:tool=read@README.md]"
            reply = _plan_turn(client, backend, session, text, prompt_id)

        def page(limit: int) -> httpx.Response:
            return httpx.get(
                f"{backend.url}/session/{session}/message",
                params={"directory": directory, "limit": str(limit)},
                auth=auth,
                timeout=30,
            )

        listed = page(3)
        assert listed.status_code == 200, listed.text
        assert listed.headers.get("x-next-cursor")
        oldest = listed.json()[0]["info"]
        assert oldest["role"] == "user", "the second prompt, format and all, on a page"
        assert oldest["id"] == prompts[1], "with older messages behind it"
        assert "format" in oldest
        whole = page(100)  # down to the session's first message: kodo's first prompt
        assert whole.status_code == 400
        assert "OutputFormat" in whole.text
        assert "x-next-cursor" not in whole.headers

        earlier = client.earlier_turn_messages(
            session, directory=directory, prompt_id=prompts[1], reply_id=reply.info["id"]
        )
        assert [m["info"]["parentID"] for m in earlier] == [prompts[1]] * len(earlier)
        tools = [p["tool"] for m in earlier for p in m["parts"] if p.get("type") == "tool"]
        assert tools == ["read"]
    finally:
        client.delete_session(session, directory=directory)
        client.close()


def test_an_answer_violating_the_schema_is_rejected_and_recorded_failed(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Plan it [oc:invalid]")
    with pytest.raises(CallFailed, match="ContractViolation") as failure:
        wrapper(backend).prompt_structured(call)
    assert failure.value.status == "failed"
    row = _row(sessions, call.op_key)
    assert row.status == "failed"
    assert row.error is not None
    assert row.error.startswith("ContractViolation")
    assert row.response is not None, "the invalid answer is kept as evidence"
    assert row.response["structured"] is not None


def test_a_plain_text_answer_is_a_structured_output_error_recorded_failed(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Plan it [oc:no-structured]")
    with pytest.raises(CallFailed, match="StructuredOutputError"):
        wrapper(backend).prompt_structured(call)
    row = _row(sessions, call.op_key)
    assert row.status == "failed"
    assert row.response is not None
    assert row.response["info"]["error"]["name"] == "StructuredOutputError"
    assert row.usage is not None
    assert row.usage["total_tokens"] > 0, "prose is billed too"


def test_a_forbidden_tool_call_never_runs_and_fails_the_call_closed(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    marker = backend.repo / TOOL_MARKER
    call = _plan_call(run_id, backend, "Plan it [oc:tool=bash]")
    with pytest.raises(CallFailed) as failure:
        wrapper(backend).prompt_structured(call)
    # The daemon denies bash (its part reads "invalid"); compat shows "bash": both are
    # outside the plan agent's allowlist, found in an earlier message of the turn.
    assert failure.value.error_name == "ToolNotAllowed"
    assert not marker.exists(), "bash is denied to the plan agent: it must never run"
    row = _row(sessions, call.op_key)
    assert row.status == "failed"
    assert row.error_name == "ToolNotAllowed"
    assert row.session_id is not None


def test_a_stalled_answer_is_aborted_recorded_timed_out_and_the_session_goes_idle(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, f"Plan it {STALL}")
    began = time.monotonic()
    with pytest.raises(CallFailed) as failure:
        wrapper(backend, timeout_s=1.5).prompt_structured(call)
    assert failure.value.status == "timed_out"
    assert time.monotonic() - began < 1.5 + ABORT_GRACE_S
    row = _row(sessions, call.op_key)
    assert row.status == "timed_out"
    assert row.session_id is not None
    assert row.session_id not in _wait_idle(backend, row.session_id)


LLM500_TIMEOUT_S = 8.0
"""Long enough for a loaded daemon's first model request to fail and its retry to show."""


def test_an_llm_500_is_retried_by_the_daemon_but_our_timeout_still_holds(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Plan it [oc:llm500]")
    seen: list[dict[str, Any]] = []
    failures: list[CallFailed] = []

    def ask() -> None:
        try:
            wrapper(backend, timeout_s=LLM500_TIMEOUT_S).prompt_structured(call)
        except CallFailed as exc:
            failures.append(exc)

    began = time.monotonic()
    worker = threading.Thread(target=ask)
    worker.start()
    while worker.is_alive() and not seen:
        seen += [s for s in _statuses(backend).values() if s.get("type") == "retry"]
        time.sleep(0.1)
    worker.join(LLM500_TIMEOUT_S + ABORT_GRACE_S + 5)
    assert seen, "the daemon reports it is retrying the model"
    assert {"attempt", "message", "next"} <= set(seen[0])
    assert [f.status for f in failures] == ["timed_out"]
    assert time.monotonic() - began < LLM500_TIMEOUT_S + ABORT_GRACE_S
    row = _row(sessions, call.op_key)
    assert row.status == "timed_out"
    assert row.session_id is not None
    assert row.session_id not in _wait_idle(backend, row.session_id)


@pytest.mark.parametrize(
    ("agent", "model", "named"),
    [
        ("plan", ModelRef("kodo", "no-such-model"), "no model 'kodo/no-such-model'"),
        ("no-such-agent", MODEL, "no agent 'no-such-agent'"),
    ],
)
def test_an_unknown_model_or_agent_is_a_config_error_that_names_it(
    backend: Backend, agent: str, model: ModelRef, named: str
) -> None:
    """Both daemons answer the same 500 as for an internal failure; their lists tell."""
    with backend.client() as client:
        session = client.create_session(directory=str(backend.repo), title="kodo wrong config")
        with pytest.raises(OpenCodeConfigError) as raised:
            client.prompt(
                str(session["id"]),
                directory=str(backend.repo),
                agent=agent,
                model=model,
                text="hello",
                tools=tools_map("plan"),
                format=None,
            )
    assert (raised.value.status, raised.value.name) == (500, "UnknownError")
    assert raised.value.data["message"] == DAEMON_UNEXPECTED
    assert named in str(raised.value)
    assert CONFIG_HINT in str(raised.value)


def test_an_unknown_model_fails_the_call_at_once_with_the_hint(
    backend: Backend, sessions: sessionmaker[Session], wrapper: Wrappers, run_id: str
) -> None:
    call = _plan_call(run_id, backend, "Plan with a model the daemon lacks")
    with pytest.raises(CallFailed) as failure:
        wrapper(backend, model=ModelRef("kodo", "no-such-model")).prompt_structured(call)
    assert (failure.value.kind, failure.value.retryable) == ("config", False)
    assert CONFIG_HINT in failure.value.error
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name) == ("failed", "OpenCodeConfigError")


def test_the_daemons_agents_and_models_read_the_same_on_both(backend: Backend) -> None:
    with backend.client() as client:
        catalogue = client.catalogue(directory=str(backend.repo))
    assert catalogue is not None
    assert {"plan", "build"} <= catalogue.agents
    assert (MODEL.provider_id, MODEL.model_id) in catalogue.models


def test_both_backends_give_the_same_plan_with_the_same_tokens(
    request: pytest.FixtureRequest, wrapper: Wrappers, db: Session
) -> None:
    """The scripted LLM and the compat server share answer builders: same seed, same answer."""
    results: dict[str, StructuredResult] = {}
    for name in ("real", "compat"):
        backend = _backend(request, name)
        run = RunFactory()
        db.commit()
        call = _plan_call(str(run.id), backend, "Teach calc.py to subtract")
        results[name] = wrapper(backend).prompt_structured(call)
    real, compat = results["real"], results["compat"]
    assert real.answer == compat.answer
    keys = ("input_tokens", "output_tokens", "reasoning_tokens", "cache_read_tokens", "cost_usd")
    assert {k: real.usage[k] for k in keys} == {k: compat.usage[k] for k in keys}


def _backend(request: pytest.FixtureRequest, name: str) -> Backend:
    backends: dict[str, Backend] = request.getfixturevalue("backends")
    if name not in backends:
        pytest.fail(f"backend {name} was not started by an earlier case")
    return backends[name]
