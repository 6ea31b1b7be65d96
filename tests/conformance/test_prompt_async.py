"""``prompt_async``, the event stream and ``/session/status``: the real daemon and
oc-compat alike (issue 11's foundation: a turn that holds no thread while it runs).

Each case opens the stream first (its ``server.connected`` read) so no event of the
turn can be missed, then sends the prompt on another connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.worker.collector import assistant_usage
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodeError
from shared.opencode.events import OcEvent
from shared.opencode.ports import EventStream
from shared.opencode.tools import permission_rules, tools_map
from tests.conformance.conftest import MODEL, Backend

pytestmark = pytest.mark.conformance

HANG_GUARD_S = 60.0
"""A turn that never ends fails the case instead of hanging it (not a timing claim)."""

FORMAT = {"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1}


class Watch:
    """An open event stream, read up to the events a case waits for."""

    def __init__(self, client: OpenCodeClient, directory: str | None) -> None:
        self.stream: EventStream = client.events(directory=directory, timeout_s=30.0)
        self._events: Iterator[OcEvent] = iter(self.stream)
        first = next(self._events)
        assert first.type == "server.connected"

    def until(self, session_id: str, stop: Callable[[OcEvent], bool]) -> list[OcEvent]:
        """The session's events, up to and including the first one ``stop`` accepts."""
        seen: list[OcEvent] = []
        deadline = time.monotonic() + HANG_GUARD_S
        for event in self._events:
            if event.session_id == session_id:
                seen.append(event)
                if stop(event):
                    return seen
            if time.monotonic() > deadline:
                break
        pytest.fail(f"the stream ended or stalled before the turn did: {_story(seen)}")

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def client(backend: Backend) -> Iterator[OpenCodeClient]:
    with backend.client() as made:
        yield made


@pytest.fixture
def watch(client: OpenCodeClient, backend: Backend) -> Iterator[Watch]:
    opened = Watch(client, str(backend.repo))
    yield opened
    opened.close()


def _story(events: list[OcEvent]) -> list[tuple[str, str | None]]:
    """What a collector acts on: status changes, idle and errors, in order."""
    wanted = ("session.status", "session.idle", "session.error")
    return [(e.type, e.status or e.error_name) for e in events if e.type in wanted]


def _session(client: OpenCodeClient, backend: Backend, title: str) -> str:
    created = client.create_session(
        directory=str(backend.repo), title=title, permission=permission_rules("plan")
    )
    return str(created["id"])


def _send(
    client: OpenCodeClient, backend: Backend, session_id: str, text: str, agent: str = "plan"
) -> None:
    client.prompt_async(
        session_id,
        directory=str(backend.repo),
        agent=agent,
        model=MODEL,
        text=text,
        tools=tools_map("plan"),
        format=FORMAT,
    )


def _idle(event: OcEvent) -> bool:
    return event.type == "session.idle"


def test_prompt_async_answers_204_and_the_stream_shows_busy_then_idle(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    session_id = _session(client, backend, "kodo async busy-idle")
    _send(client, backend, session_id, "Plan a change to README.md")  # None: it was a 204
    story = _story(watch.until(session_id, _idle))
    assert story[0] == ("session.status", "busy")
    assert story[-2:] == [("session.status", "idle"), ("session.idle", None)]
    assert not [s for s in story if s[0] == "session.error"]


def test_session_status_says_busy_while_the_turn_runs_and_forgets_it_after(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    session_id = _session(client, backend, "kodo async status")
    _send(client, backend, session_id, "Plan a change to README.md [oc:slow=10000]")
    watch.until(session_id, lambda e: e.status == "busy")
    assert client.busy_sessions(directory=str(backend.repo)).get(session_id) == {"type": "busy"}
    watch.until(session_id, _idle)
    assert session_id not in client.busy_sessions(directory=str(backend.repo))


def test_the_answer_read_after_idle_is_what_the_synchronous_prompt_gives(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    text = "Plan a change to README.md and calc.py"
    session_id = _session(client, backend, "kodo async answer")
    _send(client, backend, session_id, text)
    events = watch.until(session_id, _idle)
    reply = client.last_message(session_id, directory=str(backend.repo))
    assert reply is not None
    assert reply.info["role"] == "assistant"
    assert "completed" in reply.info["time"]
    assert reply.error_name is None
    assert "StructuredOutput" in reply.tool_names
    updated = [e.properties["info"] for e in events if e.type == "message.updated"]
    assert updated[-1]["structured"] == reply.structured  # told before the idle event

    sync_session = _session(client, backend, "kodo sync answer")
    sync = client.prompt(
        sync_session,
        directory=str(backend.repo),
        agent="plan",
        model=MODEL,
        text=text,
        tools=tools_map("plan"),
        format=FORMAT,
    )
    assert reply.structured == sync.structured
    assert reply.tokens == sync.tokens


def _aborted_message(event: OcEvent) -> bool:
    info: Any = event.properties.get("info")
    return (
        event.type == "message.updated"
        and isinstance(info, dict)
        and isinstance(info.get("error"), dict)
        and info["error"].get("name") == "MessageAbortedError"
    )


def test_an_abort_during_a_slow_async_turn_tells_the_error_then_goes_idle(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    """The daemon's order depends on how far the turn got (observed on 1.18.33): once
    the model call is under way, ``session.error`` MessageAbortedError, idle, then the
    message updated with the error, idle again; before it, only the updated message and
    one idle. Either way the error is told before the first ``session.idle``."""
    session_id = _session(client, backend, "kodo async abort")
    _send(client, backend, session_id, "Plan a change to README.md [oc:slow=30000]")
    watch.until(session_id, lambda e: e.status == "busy")
    assert client.abort(session_id, directory=str(backend.repo)) is True
    events = watch.until(session_id, _idle)
    told = [e for e in events if e.error_name == "MessageAbortedError" or _aborted_message(e)]
    assert told, _story(events)
    assert _story(events)[-2:] == [("session.status", "idle"), ("session.idle", None)]
    if not any(_aborted_message(e) for e in events):
        watch.until(session_id, _aborted_message)  # the message is updated after the idle
    reply = client.last_message(session_id, directory=str(backend.repo))
    assert reply is not None
    assert reply.error_name == "MessageAbortedError"
    assert "completed" in reply.info["time"]
    assert reply.structured is None
    assert session_id not in client.busy_sessions(directory=str(backend.repo))


def test_an_abort_with_no_turn_running_is_confirmed_whatever_the_session(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    """A cancel ends a run's call on a confirmed abort only (``true``, or a 404); any
    other answer keeps the call ``sent`` and its abort is tried again. So an abort with
    no turn running must be confirmed, not refused, or a cancel that lands after the
    turn ended would wait out its window and record an abort it could not confirm.
    1.18.33 looks nothing up: any ``ses_`` id is answered ``true``, even a deleted
    session's; another shape of id is a 500."""
    directory = str(backend.repo)
    session_id = _session(client, backend, "kodo idle abort")
    assert client.abort(session_id, directory=directory) is True, "never prompted"
    _send(client, backend, session_id, "Plan a change to README.md")
    watch.until(session_id, _idle)
    assert client.abort(session_id, directory=directory) is True, "its turn ended"
    assert client.delete_session(session_id, directory=directory) is True
    assert client.abort(session_id, directory=directory) is True, "deleted"
    with pytest.raises(OpenCodeError) as malformed:
        client.abort("kodo-not-a-session", directory=directory)
    assert malformed.value.status == 500


def test_an_unknown_agent_is_a_204_then_a_session_error_and_never_busy(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    session_id = _session(client, backend, "kodo async unknown agent")
    _send(client, backend, session_id, "Plan a change to README.md", agent="kodo-no-such-agent")
    events = watch.until(session_id, lambda e: e.type == "session.error")
    assert events[-1].error_name == "UnknownError"
    assert "kodo-no-such-agent" in str(events[-1].properties["error"])
    assert not [e for e in events if e.status == "busy"]
    assert client.last_message(session_id, directory=str(backend.repo)) is None


def test_the_global_stream_names_the_directory_of_each_event(
    backend: Backend, client: OpenCodeClient
) -> None:
    everywhere = Watch(client, None)
    try:
        session_id = _session(client, backend, "kodo async global")
        _send(client, backend, session_id, "Plan a change to README.md")
        events = everywhere.until(session_id, _idle)
    finally:
        everywhere.close()
    assert {e.directory for e in events} == {str(backend.repo)}
    assert _story(events)[-1] == ("session.idle", None)


def test_each_step_of_a_running_turn_reports_its_tokens_before_the_turn_ends(
    backend: Backend, client: OpenCodeClient, watch: Watch
) -> None:
    """What the collector's token bound stands on: a turn whose first step read for
    300,000 tokens is reported (``message.updated`` of an assistant message, read by the
    collector's own parser) while the turn still runs, so it can be aborted there."""
    session_id = _session(client, backend, "kodo async spend")
    _send(client, backend, session_id, "Plan a change [oc:spend=300000] [oc:slow=30000]")

    def spent(event: OcEvent) -> bool:
        usage = assistant_usage(event)
        return usage is not None and usage[2].tokens >= 300_000

    events = watch.until(session_id, lambda e: spent(e) or _idle(e))
    assert spent(events[-1]), _story(events)
    assert client.busy_sessions(directory=str(backend.repo)).get(session_id) == {"type": "busy"}
    assert client.abort(session_id, directory=str(backend.repo)) is True
    watch.until(session_id, _idle)
