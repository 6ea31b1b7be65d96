"""The in-memory daemon's prompt_async and events, as the collector step will use them."""

from __future__ import annotations

from shared.opencode.messages import ModelRef
from tests.fakes.agent import FakeAgent, ScriptedTurn

MODEL = ModelRef("kodo", "kodo-scripted")


def _send(agent: FakeAgent, session_id: str) -> None:
    agent.prompt_async(
        session_id, directory="/r", agent="plan", model=MODEL, text="t", tools={}, format=None
    )


def test_a_held_async_turn_is_busy_until_released_then_idle_with_its_answer() -> None:
    agent = FakeAgent(ScriptedTurn(answer={"ok": True}))
    agent.hold_async = True
    session_id = str(agent.create_session(directory="/r", title="x")["id"])
    _send(agent, session_id)
    assert agent.busy_sessions(directory="/r") == {session_id: {"type": "busy"}}
    assert agent.last_message(session_id, directory="/r") is None
    agent.release(session_id)
    reply = agent.last_message(session_id, directory="/r")
    assert reply is not None
    assert reply.structured == {"ok": True}
    with agent.events(directory="/r", timeout_s=1) as stream:
        kinds = [(e.type, e.status, e.directory) for e in stream]
    assert kinds[0] == ("server.connected", None, None)
    assert kinds[-2:] == [("session.status", "idle", None), ("session.idle", None, None)]
    everywhere = list(agent.events(timeout_s=1))
    assert everywhere[-1].directory == "/r"


def test_an_abort_ends_a_held_async_turn_with_the_aborted_error() -> None:
    agent = FakeAgent(ScriptedTurn(answer={"ok": True}))
    agent.hold_async = True
    session_id = str(agent.create_session(directory="/r", title="x")["id"])
    _send(agent, session_id)
    agent.abort(session_id, directory="/r")
    reply = agent.last_message(session_id, directory="/r")
    assert reply is not None
    assert reply.error_name == "MessageAbortedError"
    errors = [e.error_name for e in agent.events(timeout_s=1) if e.type == "session.error"]
    assert errors == ["MessageAbortedError"]
    assert agent.busy_sessions(directory="/r") == {}
