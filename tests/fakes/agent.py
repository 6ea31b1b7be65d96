"""An in-memory OpenCode daemon: the :class:`shared.opencode.ports.AgentClient` fake.

Script each turn it will answer, in order: a structured answer (with the tool parts,
earlier messages, child sessions and usage the turn should show) or an error raised
from ``prompt`` (an HTTP 500, a configuration error, a timeout). It records what was
sent, so a test can say how many prompts reached "the daemon".

``prompt_async`` plays the same script without blocking: the turn's answer becomes the
session's :meth:`FakeAgent.last_message` and its events (``session.status`` busy,
``message.updated``, ``session.status`` idle, ``session.idle``, as the real daemon
sends them) are logged for :meth:`FakeAgent.events`. With ``hold_async`` set the turn
stays busy until :meth:`FakeAgent.release` (or an abort) ends it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from shared.opencode.diagnosis import DAEMON_UNEXPECTED
from shared.opencode.errors import (
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeServerError,
    OpenCodeTimeout,
    classify_info_error,
)
from shared.opencode.events import OcEvent
from shared.opencode.messages import ModelRef, PromptReply


def tokens(total: int, *, input: int | None = None, output: int = 0) -> dict[str, Any]:
    """OpenCode's ``tokens`` object, its counts adding up to its total as the daemon's do
    (``input``: the rest of the total unless given)."""
    read = total - output if input is None else input
    return {"total": total, "input": read, "output": output, "reasoning": 0, "cache": {}}


def http_500() -> OpenCodeServerError:
    """The daemon failed inside (transient): the 500 it also gives unknown agents."""
    return OpenCodeServerError(
        f"HTTP 500 UnknownError: {DAEMON_UNEXPECTED}",
        status=500,
        name="UnknownError",
        data={"message": DAEMON_UNEXPECTED},
    )


def unknown_model() -> OpenCodeConfigError:
    """A 500 diagnosed against the daemon's lists: kodo names a model it lacks."""
    return OpenCodeConfigError(
        "HTTP 500 UnknownError: the daemon has no model 'kodo/missing'",
        status=500,
        name="UnknownError",
    )


def no_answer_in_time() -> OpenCodeTimeout:
    return OpenCodeTimeout("POST /session/{id}/message: no answer in time (fake)")


@dataclass
class ScriptedTurn:
    """One turn the fake daemon will play: ``error`` is raised, else ``answer`` is given."""

    answer: dict[str, Any] | None = None
    error: OpenCodeError | None = None
    tools: list[str] = field(default_factory=list)  # tool parts in the last message
    earlier_tools: list[str] = field(default_factory=list)  # tools of earlier messages
    children: list[dict[str, Any]] = field(default_factory=list)
    # The session's totals (None: unreadable); the turn's earlier messages carry what
    # they add to the answer's own message_tokens, as on the daemon.
    session_tokens: dict[str, Any] | None = None
    totals_fail_first: int = 0  # this many reads of the totals fail (HTTP 500) first
    earlier_unreadable: bool = False  # reading the turn's earlier messages fails (HTTP 500)
    message_tokens: dict[str, Any] = field(default_factory=lambda: tokens(10))
    cost: float = 0.0
    edits: dict[str, str | None] = field(default_factory=dict)  # path -> content (None: delete)
    parent: str | None = None  # the answer's parentID if not the prompt's messageID
    info_error: dict[str, Any] | None = None  # the turn ended on this info.error


def _earlier_usage(turn: ScriptedTurn) -> dict[str, Any] | None:
    """What the turn's steps before its answer used: the session's scripted totals less
    the answer's own (a daemon's totals are its messages added up), or None."""
    totals, answer = turn.session_tokens, turn.message_tokens
    if totals is None:
        return None
    keys = ("total", "input", "output", "reasoning")
    spent = {key: int(totals.get(key, 0)) - int(answer.get(key, 0)) for key in keys}
    if any(value < 0 for value in spent.values()):
        raise AssertionError(f"scripted totals {totals} are below the answer's own {answer}")
    return {**spent, "cache": {}} if any(spent.values()) else None


def _tool_part(name: str) -> dict[str, Any]:
    """A completed tool part; ``NAME@PATH`` names PATH as its ``filePath``."""
    tool, _, path = name.partition("@")
    state: dict[str, Any] = {"status": "completed"}
    if path:
        state["input"] = {"filePath": path}
    return {"type": "tool", "tool": tool, "state": state}


@dataclass
class SentPrompt:
    session_id: str
    agent: str
    model: ModelRef
    text: str
    tools: dict[str, bool]
    format: dict[str, Any] | None
    message_id: str | None = None


class FakeEventStream:
    """A snapshot of the fake daemon's event log, as an open stream that then ends."""

    def __init__(self, events: list[OcEvent]) -> None:
        self._events = events
        self.skipped: Counter[str] = Counter()
        self.closed = False

    def __iter__(self) -> Iterator[OcEvent]:
        for event in self._events:
            if self.closed:
                return
            yield event

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True


class FakeAgent:
    """:class:`shared.opencode.ports.AgentClient` in memory, scripted turn by turn."""

    def __init__(self, *turns: ScriptedTurn) -> None:
        self.script: deque[ScriptedTurn] = deque(turns)
        self.sent: list[SentPrompt] = []
        self.aborted: list[str] = []
        self.abort_waits: list[float | None] = []  # each abort's own timeout
        self.deleted: list[str] = []
        self.totals_read_timeouts: list[float | None] = []  # get_session's, in order
        self.disposed: list[str] = []  # directories POST /instance/dispose named
        self.sessions: dict[str, ScriptedTurn | None] = {}
        self.busy: set[str] = set()  # sessions GET /session/status reports busy
        self.stubborn: set[str] = set()  # busy sessions an abort does not stop
        self.closed = False
        self.hold_async = False  # prompt_async turns stay busy until release()
        self.held: dict[str, tuple[str, PromptReply]] = {}  # session -> (directory, reply)
        self.replies: dict[str, PromptReply] = {}  # the newest message of each session
        self.event_log: list[OcEvent] = []

    def will(self, *turns: ScriptedTurn) -> FakeAgent:
        self.script.extend(turns)
        return self

    def health(self, *, timeout_s: float = 2.0) -> dict[str, Any]:
        return {"healthy": True, "version": "fake"}

    def create_session(
        self, *, directory: str, title: str, permission: list[dict[str, str]] | None = None
    ) -> dict[str, Any]:
        session_id = f"ses_fake{len(self.sessions) + 1}"
        self.sessions[session_id] = None
        return {"id": session_id, "title": title, "directory": directory}

    def prompt(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        timeout_s: float | None = None,
        message_id: str | None = None,
    ) -> PromptReply:
        """The scripted turn, blocking; a turn that ended on an error (``info_error``) is
        raised with its reply, as the real client raises it."""
        reply = self._play(session_id, directory, agent, model, text, tools, format, message_id)
        error = classify_info_error(reply.info)
        if error is not None:
            error.reply = reply
            raise error
        return reply

    def _play(
        self,
        session_id: str,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        message_id: str | None,
    ) -> PromptReply:
        self.sent.append(SentPrompt(session_id, agent, model, text, tools, format, message_id))
        if not self.script:
            raise AssertionError(
                f"the fake daemon has no turn scripted for prompt {len(self.sent)}"
            )
        turn = self.script.popleft()
        self.sessions[session_id] = turn
        for path, content in turn.edits.items():  # what the agent's edit tools would do
            target = Path(directory) / path
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        if turn.error is not None:
            raise turn.error
        info = {
            "id": f"msg_fake{len(self.sent)}",
            "role": "assistant",
            "parentID": turn.parent or message_id or f"msg_fakeuser{len(self.sent)}",
            "structured": turn.answer,
            "tokens": turn.message_tokens,
            "cost": turn.cost,
        }
        if turn.info_error is not None:
            info["error"] = turn.info_error
        parts = [_tool_part(t) for t in turn.tools] + [_tool_part("StructuredOutput")]
        return PromptReply(info=info, parts=parts)

    def prompt_async(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """The scripted turn, played without blocking; a scripted error is raised as the
        HTTP failure it stands for (the same classes as :meth:`prompt`)."""
        reply = self._play(session_id, directory, agent, model, text, tools, format, message_id)
        reply.info.setdefault("id", f"msg_fake{len(self.sent)}")
        reply.info.setdefault("sessionID", session_id)
        reply.info.setdefault("time", {"created": len(self.sent), "completed": len(self.sent)})
        self._emit(directory, "session.status", session_id, status={"type": "busy"})
        if self.hold_async:
            self.busy.add(session_id)
            self.held[session_id] = (directory, reply)
            return
        self._finish(session_id, directory, reply)

    def release(self, session_id: str) -> None:
        """End a held ``prompt_async`` turn with its scripted answer."""
        directory, reply = self.held.pop(session_id)
        self.busy.discard(session_id)
        self._finish(session_id, directory, reply)

    def _finish(self, session_id: str, directory: str, reply: PromptReply) -> None:
        self.replies[session_id] = reply
        error = reply.info.get("error")
        if isinstance(error, dict):
            self._emit(directory, "session.error", session_id, error=error)
        self._emit(directory, "message.updated", session_id, info=reply.info)
        self._emit(directory, "session.status", session_id, status={"type": "idle"})
        self._emit(directory, "session.idle", session_id)

    def _emit(self, directory: str, kind: str, session_id: str, **properties: Any) -> None:
        event_id = f"evt_fake{len(self.event_log) + 1}"
        props = {"sessionID": session_id, **properties}
        self.event_log.append(OcEvent(kind, props, event_id, directory))

    def last_message(self, session_id: str, *, directory: str) -> PromptReply | None:
        return self.replies.get(session_id)

    def diagnose(
        self, error: OpenCodeError, *, directory: str, agent: str, model: ModelRef
    ) -> OpenCodeError:
        """The fake offers every agent and model: no error is a configuration error."""
        return error

    def events(
        self,
        *,
        directory: str | None = None,
        timeout_s: float,
        only: frozenset[str] | None = None,
    ) -> FakeEventStream:
        """What was logged so far, after ``server.connected``; ``directory=None`` is the
        global stream (every event names its directory), else that directory's events
        without it, as the daemon sends them; ``only`` those types, if given."""
        connected = OcEvent("server.connected", {}, "evt_fake0")
        if directory is None:
            events = [connected, *self.event_log]
        else:
            mine = [e for e in self.event_log if e.directory == directory]
            events = [connected, *(OcEvent(e.type, e.properties, e.id) for e in mine)]
        return FakeEventStream([e for e in events if only is None or e.type in only])

    def _turn(self, session_id: str) -> ScriptedTurn:
        turn = self.sessions.get(session_id)
        if turn is None:
            raise AssertionError(f"{session_id} played no turn")
        return turn

    def get_session(
        self, session_id: str, *, directory: str, timeout_s: float | None = None
    ) -> dict[str, Any]:
        self.totals_read_timeouts.append(timeout_s)
        turn = self._turn(session_id)
        if turn.totals_fail_first > 0:
            turn.totals_fail_first -= 1
            raise OpenCodeServerError("HTTP 500 (fake): totals unreadable for now", status=500)
        if turn.session_tokens is None:
            raise OpenCodeServerError("HTTP 500 (fake): totals unreadable", status=500)
        return {"id": session_id, "tokens": turn.session_tokens, "cost": turn.cost}

    def delete_session(self, session_id: str, *, directory: str) -> bool:
        self.deleted.append(session_id)
        return True

    def session_children(self, session_id: str, *, directory: str) -> list[dict[str, Any]]:
        return list(self._turn(session_id).children)

    def earlier_turn_messages(
        self,
        session_id: str,
        *,
        directory: str,
        prompt_id: str | None = None,
        reply_id: str | None = None,
        max_steps: int = 50,
    ) -> list[dict[str, Any]]:
        if self._turn(session_id).earlier_unreadable:
            raise OpenCodeServerError("HTTP 500 (fake): messages unreadable", status=500)
        tools = self._turn(session_id).earlier_tools
        parent = (
            self.replies[session_id].info.get("parentID")
            if session_id in self.replies
            else prompt_id
        )
        info = {"role": "assistant", "parentID": parent}
        earlier = [{"info": dict(info), "parts": [_tool_part(t)]} for t in tools]
        spent = _earlier_usage(self._turn(session_id))
        if spent is not None:  # the steps before the answer used what its totals add
            if not earlier:
                earlier = [{"info": dict(info), "parts": []}]
            earlier[0]["info"]["tokens"] = spent
        return earlier

    def abort(self, session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        self.aborted.append(session_id)
        self.abort_waits.append(timeout_s)
        if session_id in self.stubborn:
            return True
        self.busy.discard(session_id)
        held = self.held.pop(session_id, None)
        if held is not None:  # a held async turn ends aborted, as on the daemon
            error = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
            info = {**held[1].info, "error": error, "structured": None}
            self._finish(session_id, held[0], PromptReply(info=info, parts=[]))
        return True

    def busy_sessions(self, *, directory: str, timeout_s: float | None = None) -> dict[str, Any]:
        return {sid: {"type": "busy"} for sid in sorted(self.busy)}

    def dispose_instance(self, *, directory: str, timeout_s: float | None = None) -> bool:
        self.disposed.append(directory)
        return True

    def close(self) -> None:
        self.closed = True
