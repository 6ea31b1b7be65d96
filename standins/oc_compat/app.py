"""The Flask app: OpenCode's session and prompt endpoints over in-memory state.

State lives in one :class:`CompatState` guarded by a lock; prompts run outside the
lock so a slow prompt never blocks ``/abort`` or other sessions. ``prompt_async``
answers 204 once the turn is registered (``GET /session/status`` says busy from then)
and plays it on a thread of its own; both kinds of prompt publish the daemon's events
(see events.py) in the daemon's order, the session leaving ``/session/status`` before
its ``session.idle`` is sent and after its answer is readable.

``threading`` and ``queue`` are used by module attribute at call time, never imported
by name: in the ``kodo oc-compat`` process they are gevent's (green.py), so that "thread"
is a greenlet, a held prompt waits on a gevent event that ``/abort`` sets, and the
lock is a gevent lock. No lock is held across a wait.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from shared.hashing import sha256_hex
from standins.oc_compat import answers, edits, shapes
from standins.oc_compat.directives import Directives, parse
from standins.oc_compat.events import HEARTBEAT_S, EventBus
from standins.oc_compat.fixtures import FixtureError

KNOWN_AGENTS = frozenset({"plan", "build"})
_PERMISSION_ACTIONS = frozenset({"allow", "deny", "ask"})


@dataclass(frozen=True)
class CompatConfig:
    """What the server pretends to be configured with."""

    seed: int = 0
    password: str = ""
    username: str = "opencode"
    provider_id: str = "kodo"
    model_id: str = "kodo-scripted"
    fixtures_dir: Path | None = None  # where ``[oc:fixture=NAME]`` finds NAME.json
    heartbeat_s: float = HEARTBEAT_S  # ``server.heartbeat`` after this much silence


@dataclass
class _Session:
    data: dict[str, Any]
    children: list[dict[str, Any]] = field(default_factory=list)
    in_flight: set[threading.Event] = field(default_factory=set)
    retry: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    abort_refusals: int = 0  # [oc:abort-fails=N]: aborts still to answer 500
    delete_refusals: int = 0  # [oc:delete-fails=N]: deletes still to answer 500


class BadRequest(ValueError):
    """The request body does not have the shape the endpoint needs."""


class CompatState:
    """Sessions, in-flight prompts and call counters of one server."""

    def __init__(self, config: CompatConfig) -> None:
        self.config = config
        self.ids = shapes.IdFactory(config.seed)
        self.lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.bus = EventBus(self.ids, config.heartbeat_s)
        self.held = 0  # prompts in flight now, over every session
        # Directories the daemon holds open (an "instance" each): any request naming a
        # directory opens it, POST /instance/dispose closes it (API: instance.dispose).
        self.instances: set[str] = set()
        self.reset()

    def open_instance(self, directory: str, *, disposing: bool) -> None:
        """A request named ``directory``: the daemon opens it first if it is not open (a
        dispose of a directory never opened pays that boot too, for nothing)."""
        with self.lock:
            if directory in self.instances:
                return
            self.instances.add(directory)
            self.instance_boots += 1
            if disposing:
                self.disposes_unopened += 1

    def publish(self, session: _Session, kind: str, **properties: Any) -> None:
        """Send ``kind`` about ``session`` to the streams of its directory and the global ones."""
        data = session.data
        props = {"sessionID": data["id"], **properties}
        self.bus.publish(str(data["directory"]), str(data["projectID"]), kind, props)

    def reset(self) -> None:
        with self.lock:
            self.prompts = 0
            self.aborts = 0
            self.deleted = 0
            self.by_session: Counter[str] = Counter()
            self.by_text: Counter[str] = Counter()
            self.by_title: Counter[str] = Counter()
            # "METHOD /route/<rule>": what a client costs the daemon, request by request.
            self.by_route: Counter[str] = Counter()
            # The most prompts held at once since the reset: a poller of ``in_flight``
            # can miss a peak, the server cannot (the bench's think-time phase reads it).
            self.held_peak = self.held
            self.instance_boots = 0
            self.instances_disposed = 0
            self.disposes_unopened = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "prompts": self.prompts,
                "aborts": self.aborts,
                "deleted": self.deleted,
                "sessions": len(self.sessions),
                "by_session": dict(self.by_session),
                "by_text_sha256": dict(self.by_text),
                "by_title": dict(self.by_title),
                "by_route": dict(self.by_route),
                "in_flight": {
                    sid: len(s.in_flight) for sid, s in self.sessions.items() if s.in_flight
                },
                "in_flight_total": self.held,
                "in_flight_peak": self.held_peak,
                "event_streams": self.bus.open_streams,
                "instances_open": sorted(self.instances),
                "instance_boots": self.instance_boots,
                "instances_disposed": self.instances_disposed,
                "disposes_unopened": self.disposes_unopened,
            }

    def abort_all(self) -> None:
        """Release every in-flight prompt and end every event stream (used on shutdown)."""
        with self.lock:
            for session in self.sessions.values():
                for event in session.in_flight:
                    event.set()
        self.bus.close_all()


def _json(value: object, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _error(status: int, name: str, message: str, **extra: Any) -> Response:
    return _json(shapes.error_body(name, message, **extra), status)


def _cursor_of(message_id: str) -> str:
    """An opaque page cursor, as the daemon's (base64url JSON naming the oldest message
    of the page; kodo only ever sends it back)."""
    raw = json.dumps({"id": message_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _cursor_id(cursor: str) -> str | None:
    """The message a cursor of :func:`_cursor_of` names, None for anything else."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        return None
    named = decoded.get("id") if isinstance(decoded, dict) else None
    return named if isinstance(named, str) else None


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def _directory() -> str:
    """The request's directory, resolved as the daemon does, once per request (a
    session's creation asked three times: 8% of the stand-in's CPU)."""
    resolved = g.get("oc_directory")
    if not isinstance(resolved, str):
        raw = request.args.get("directory") or request.headers.get("x-opencode-directory") or ""
        resolved = os.path.realpath(raw or os.getcwd())
        g.oc_directory = resolved
    return resolved


def _authorized(config: CompatConfig) -> bool:
    if not config.password:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, config.username) and hmac.compare_digest(
        password, config.password
    )


def _check_permission(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise BadRequest("permission must be a list")
    rules: list[dict[str, str]] = []
    for rule in value:
        if not isinstance(rule, dict) or not all(
            isinstance(rule.get(k), str) for k in ("permission", "pattern", "action")
        ):
            raise BadRequest("permission rules need permission, pattern and action strings")
        if rule["action"] not in _PERMISSION_ACTIONS:
            raise BadRequest(f"permission action must be one of {sorted(_PERMISSION_ACTIONS)}")
        rules.append({k: rule[k] for k in ("permission", "pattern", "action")})
    return rules


@dataclass(frozen=True)
class _Prompt:
    agent: str
    provider_id: str
    model_id: str
    text: str
    system: str
    fmt: dict[str, Any] | None
    message_id: str | None = None  # the user message's id, if the prompt names it


def _check_prompt(body: dict[str, Any], config: CompatConfig) -> _Prompt:
    """Validate a prompt body like the daemon does; unknown top-level keys are dropped."""
    parts = body.get("parts")
    if not isinstance(parts, list) or not parts:
        raise BadRequest("parts must be a non-empty list")
    texts: list[str] = []
    for item in parts:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise BadRequest("each part needs a type")
        if item["type"] == "text":
            if not isinstance(item.get("text"), str):
                raise BadRequest("a text part needs text")
            texts.append(item["text"])
        elif item["type"] not in ("file", "agent", "subtask"):
            raise BadRequest(f"unknown part type {item['type']!r}")
    agent = body.get("agent", "build")
    model = body.get("model", {"providerID": config.provider_id, "modelID": config.model_id})
    if not isinstance(agent, str):
        raise BadRequest("agent must be a string")
    if not isinstance(model, dict) or not all(
        isinstance(model.get(k), str) for k in ("providerID", "modelID")
    ):
        raise BadRequest("model needs providerID and modelID strings")
    system = body.get("system", "")
    if not isinstance(system, str):
        raise BadRequest("system must be a string")
    tools = body.get("tools", {})
    if not isinstance(tools, dict) or not all(isinstance(v, bool) for v in tools.values()):
        raise BadRequest("tools must map names to booleans")
    fmt = body.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_schema"):
            raise BadRequest("format.type must be text or json_schema")
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
            raise BadRequest("a json_schema format needs a schema object")
    message_id = body.get("messageID")
    if message_id is not None and not (
        isinstance(message_id, str) and message_id.startswith("msg")
    ):
        raise BadRequest("messageID must be a string starting with msg")
    return _Prompt(
        agent, model["providerID"], model["modelID"], "\n".join(texts), system, fmt, message_id
    )


def create_app(state: CompatState) -> Flask:
    """The WSGI app over ``state``; see the package docstring for the endpoints."""
    app = Flask("oc_compat")
    config = state.config

    @app.before_request
    def _auth() -> Response | None:
        rule = request.url_rule
        route = f"{request.method} {rule.rule if rule is not None else '(no route)'}"
        if not request.path.startswith("/__kodo/"):
            with state.lock:
                state.by_route[route] += 1
        if _authorized(config):
            if not request.path.startswith(("/__kodo/", "/global/")):  # instance routes
                state.open_instance(_directory(), disposing=request.path == "/instance/dispose")
            return None
        response = _error(401, "UnauthorizedError", "Unauthorized")
        response.headers["WWW-Authenticate"] = 'Basic realm="opencode"'
        return response

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> Response:
        return _error(400, "BadRequest", str(exc), kind="Payload")

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return _error(404, "NotFoundError", f"No route {request.method} {request.path}")

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> Response:
        return _error(405, "BadRequest", f"{request.method} not allowed on {request.path}")

    def missing(session_id: str) -> Response:
        return _error(404, "NotFoundError", f"Session not found: {session_id}")

    @app.get("/global/health")
    def health() -> Response:
        return _json({"healthy": True, "version": shapes.VERSION})

    @app.get("/agent")
    def agents() -> Response:
        return _json([shapes.agent(name) for name in sorted(KNOWN_AGENTS)])

    @app.get("/config/providers")
    def providers() -> Response:
        return _json(shapes.providers(config.provider_id, config.model_id))

    @app.post("/session")
    def create_session() -> Response:
        body = _body()
        title = body.get("title", "New session")
        if not isinstance(title, str):
            raise BadRequest("title must be a string")
        permission = _check_permission(body["permission"]) if "permission" in body else None
        session_id = state.ids.new("ses")
        created = shapes.now_ms()
        data: dict[str, Any] = {
            "id": session_id,
            "slug": shapes.slug(config.seed, session_id),
            "projectID": sha256_hex(_directory())[:40],
            "directory": _directory(),
            "path": "",
            "cost": 0,
            "tokens": shapes.zero_tokens(),
            "title": title,
            "version": shapes.VERSION,
            "time": {"created": created, "updated": created},
        }
        if permission is not None:
            data["permission"] = permission
        session = _Session(data)
        with state.lock:
            state.sessions[session_id] = session
            encoded = json.dumps(data)
        state.publish(session, "session.created", info=json.loads(encoded))
        return Response(encoded, mimetype="application/json")

    @app.get("/event")
    def event_stream() -> Response:
        """This directory's events, unwrapped."""
        return _sse(state.bus.stream(_directory()))

    @app.get("/global/event")
    def global_event_stream() -> Response:
        """Every directory's events, each wrapped with its directory and project."""
        return _sse(state.bus.stream(None))

    @app.get("/session/status")
    def session_status() -> Response:
        """Non-idle sessions only, like the daemon: ``busy``, or ``retry`` while it backs off."""
        with state.lock:
            return _json(
                {
                    sid: s.retry or {"type": "busy"}
                    for sid, s in state.sessions.items()
                    if s.in_flight and s.data["directory"] == _directory()
                }
            )

    @app.delete("/session/<session_id>")
    def delete_session(session_id: str) -> Response:
        """Like the daemon: the session and its messages are gone (404 if unknown)."""
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                return missing(session_id)
            if session.delete_refusals > 0:
                session.delete_refusals -= 1
                return _error(500, "UnknownError", "[oc:delete-fails] the delete did not happen")
            del state.sessions[session_id]
            for event in session.in_flight:
                event.set()
            state.deleted += 1
            return _json(True)

    @app.get("/session/<session_id>")
    def get_session(session_id: str) -> Response:
        with state.lock:
            session = state.sessions.get(session_id)
            return _json(session.data) if session else missing(session_id)

    @app.get("/session/<session_id>/children")
    def children(session_id: str) -> Response:
        with state.lock:
            session = state.sessions.get(session_id)
            return _json(session.children) if session else missing(session_id)

    @app.post("/session/<session_id>/abort")
    def abort(session_id: str) -> Response:
        """Like opencode serve 1.18.33: ``true`` for any session id of the right shape,
        held or not, known or not (it looks nothing up); another shape is a 500."""
        if not session_id.startswith("ses_"):
            return _error(500, "UnknownError", "Unexpected server error. Check server logs.")
        with state.lock:
            state.aborts += 1
            session = state.sessions.get(session_id)
            if session is None:
                return _json(True)
            if session.abort_refusals > 0:
                session.abort_refusals -= 1
                return _error(500, "UnknownError", "[oc:abort-fails] the abort did not happen")
            for event in session.in_flight:
                event.set()
            return _json(True)

    @app.get("/session/<session_id>/message")
    def messages(session_id: str) -> Response:
        """As 1.18.33 pages (``MessageV2.page``): ``limit`` gives the newest N before the
        ``before`` cursor, oldest first, with ``X-Next-Cursor`` (an opaque token) while
        older ones remain; ``before`` without ``limit``, or a cursor it never gave, is
        a 400. Including its bug (API notes 5.1), as it really falls: only a page with
        no older messages behind it (no cursor: it reaches the session's first message,
        or the whole list) is checked against the message schema, and 400 if it holds a
        user message sent with a ``format``; a page with a cursor is listed as stored,
        such a message included (probed on 1.18.33, conformance suite)."""
        limit = request.args.get("limit", type=int)
        before = request.args.get("before")
        if before is not None and not limit:
            return _error(400, "BadRequest", "")
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                return missing(session_id)
            history = list(session.messages)
        end = len(history)
        if before is not None:
            ids = [m["info"]["id"] for m in history]
            named = _cursor_id(before)
            if named is None or named not in ids:
                return _error(400, "BadRequest", "")
            end = ids.index(named)
        window = history[max(0, end - limit) : end] if limit else history
        more = limit is not None and 0 < limit < end and bool(window)
        for i, message in enumerate([] if more else window):
            if message["info"]["role"] == "user" and "format" in message["info"]:
                got = json.dumps(message["info"]["format"])[:80]
                return _error(
                    400,
                    "BadRequest",
                    f'Expected OutputFormatJsonSchema, got {got} at [{i}]["info"]["format"]',
                )
        reply = _json(window)
        if more:
            reply.headers["X-Next-Cursor"] = _cursor_of(window[0]["info"]["id"])
        return reply

    @app.post("/session/<session_id>/message")
    def prompt(session_id: str) -> Response:
        asked = _check_prompt(_body(), config)
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                return missing(session_id)
        if _unknown(asked, config) is not None:
            return _unknown_error(state)
        return _play(state, _begin(state, session, asked))

    @app.post("/session/<session_id>/prompt_async")
    def prompt_async(session_id: str) -> Response:
        """204 at once; the turn plays on its own thread. An unknown agent or model is
        a 204 too, then a ``session.error`` (UnknownError) and no ``session.idle``, as
        on the daemon; so is ``[oc:http500]`` (the daemon failing inside the turn), with
        its idle. ``[oc:garbage]`` plays the turn but answers the POST with a body that
        is not JSON, as a broken proxy in front of the daemon would."""
        asked = _check_prompt(_body(), config)
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                return missing(session_id)
        refused = _unknown(asked, config)
        if refused is not None:
            error = {"name": "UnknownError", "data": {"message": refused}}
            state.publish(session, "session.error", error=error)
            return Response(status=204)
        turn = _begin(state, session, asked)
        threading.Thread(
            target=_play, args=(state, turn), name=f"oc-compat-{session_id}", daemon=True
        ).start()
        if turn.directives.garbage:  # the daemon took it; a broken proxy garbled the 204
            return Response(GARBAGE, status=200, mimetype="application/json")
        return Response(status=204)

    @app.post("/instance/dispose")
    def dispose_instance() -> Response:
        """Like the daemon: what the directory held open is let go (its prompts in flight
        end aborted); its sessions stay stored."""
        directory = _directory()
        with state.lock:
            state.instances.discard(directory)
            state.instances_disposed += 1
            for session in state.sessions.values():
                if session.data["directory"] == directory:
                    for event in session.in_flight:
                        event.set()
        return _json(True)

    @app.get("/__kodo/stats")
    def stats() -> Response:
        return _json(state.stats())

    @app.post("/__kodo/reset")
    def reset() -> Response:
        state.reset()
        return _json(True)

    return app


UNEXPECTED = "Unexpected server error. Check server logs for details."
"""The daemon's message for an HTTP 500 (unknown agent or model, internal failures)."""

GARBAGE = "<html><body>502 Bad Gateway</body></html>"
"""What ``[oc:garbage]`` answers with HTTP 200: a body that is not JSON (a broken proxy)."""

RETRY_CAP_S = 600.0
"""How long an ``[oc:llm500]`` prompt keeps "retrying" if nobody aborts it."""


def _unknown_error(state: CompatState, message: str = UNEXPECTED) -> Response:
    return _error(500, "UnknownError", message, ref=state.ids.new("err"))


def _sse(frames: Iterator[bytes]) -> Response:
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return Response(frames, mimetype="text/event-stream", headers=headers)


def _unknown(asked: _Prompt, config: CompatConfig) -> str | None:
    """Why the daemon would refuse this agent or model (its message), or None."""
    if asked.agent not in KNOWN_AGENTS:
        known = ", ".join(sorted(KNOWN_AGENTS))
        return f'Agent not found: "{asked.agent}". Available agents: {known}'
    if (asked.provider_id, asked.model_id) != (config.provider_id, config.model_id):
        return f"Model not found: {asked.provider_id}/{asked.model_id}"
    return None


@dataclass(frozen=True)
class _Turn:
    """A registered prompt: counted, in flight, its user message stored."""

    session: _Session
    asked: _Prompt
    directives: Directives
    aborted: threading.Event
    ctx: shapes.MessageContext


_Events = list[tuple[str, dict[str, Any]]]
_ABORTED = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}


def _begin(state: CompatState, session: _Session, asked: _Prompt) -> _Turn:
    """Count the prompt, mark the session busy, store the user message, say so."""
    session_id = str(session.data["id"])
    directives = parse(asked.text)
    aborted = threading.Event()
    with state.lock:
        state.prompts += 1
        state.by_session[session_id] += 1
        state.by_text[sha256_hex(asked.text)] += 1
        state.by_title[str(session.data["title"])] += 1
        session.in_flight.add(aborted)
        session.abort_refusals = directives.abort_fails
        session.delete_refusals = directives.delete_fails
        state.held += 1
        state.held_peak = max(state.held_peak, state.held)
        shapes.prompted(session.data, asked.agent, asked.provider_id, asked.model_id)
        directory = str(session.data["directory"])
    ctx = shapes.MessageContext(
        session_id=session_id,
        message_id=state.ids.new("msg"),
        parent_id=asked.message_id or state.ids.new("msg"),  # the daemon takes the prompt's
        agent=asked.agent,
        provider_id=asked.provider_id,
        model_id=asked.model_id,
        directory=directory,
        created_ms=shapes.now_ms(),
    )
    with state.lock:
        user = _remember_user(state, session, ctx, asked)
        if directives.child:  # the turn spawned a sub-agent (as the `task` tool would)
            child = {**session.data, "id": state.ids.new("ses"), "parentID": session_id}
            child["title"] = "subagent"
            session.children.append(child)
    state.publish(session, "message.updated", info=user)
    state.publish(session, "session.status", status={"type": "busy"})
    return _Turn(session, asked, directives, aborted, ctx)


def _play(state: CompatState, turn: _Turn) -> Response:
    """Play a registered turn to its end: the reply, then (out of flight) its events."""
    try:
        response, events = _outcome(state, turn)
    finally:
        with state.lock:
            turn.session.in_flight.discard(turn.aborted)
            state.held -= 1
            turn.session.retry = None
    for kind, properties in events:
        state.publish(turn.session, kind, **properties)
    return response


def _idle() -> _Events:
    return [("session.status", {"status": {"type": "idle"}}), ("session.idle", {})]


def _ended(state: CompatState, turn: _Turn, info: dict[str, Any]) -> _Events:
    """Store the turn's last message; the events of its end (error first, as the daemon)."""
    with state.lock:
        turn.session.messages.append({"info": info, "parts": []})
    error = info.get("error")
    if error is not None and error.get("name") == "MessageAbortedError":
        # the daemon goes idle, then updates the message, then goes idle again
        return [
            ("session.error", {"error": error}),
            *_idle(),
            ("message.updated", {"info": info}),
            *_idle(),
        ]
    said: _Events = [("session.error", {"error": error})] if error is not None else []
    return [*said, ("message.updated", {"info": info}), *_idle()]


def _outcome(state: CompatState, turn: _Turn) -> tuple[Response, _Events]:
    config = state.config
    directives, aborted, ctx, asked, session = (
        turn.directives,
        turn.aborted,
        turn.ctx,
        turn.asked,
        turn.session,
    )
    directory = ctx.directory
    start = shapes.part(ctx, state.ids.new("prt"), {"type": "step-start"})
    if directives.llm500:
        _retry_until_aborted(state, session, aborted)
    if directives.spend and not aborted.is_set():
        _spend_step(state, session, ctx, directives.spend)
    if aborted.is_set() or (directives.slow_ms and aborted.wait(directives.slow_ms / 1000)):
        if directives.loop_top_abort and directives.spend:
            # OpenCode's loop checks its abort at its top (``if (abort.aborted) break``):
            # an abort between steps writes no new message and no error; the newest
            # message is the completed spend step (finish "tool-calls").
            with state.lock:
                last = session.messages[-1]["info"]
            return _json({"info": last, "parts": []}), _idle()
        info = shapes.info(ctx, usage=None, finish=None, error=_ABORTED)
        return _json({"info": info, "parts": [start]}), _ended(state, turn, info)
    if directives.wants_http500:
        return _unknown_error(state), [_failed(UNEXPECTED)]
    if directives.garbage:  # the answer is unreadable: the turn ends without one
        return Response(GARBAGE, status=200, mimetype="application/json"), _idle()
    try:
        reply = answers.answer(
            config.seed,
            Path(directory),
            asked.text,
            asked.fmt,
            directives,
            config.fixtures_dir,
        )
    except FixtureError as exc:  # loud: a broken script must never pass for an answer
        print(f"oc-compat: [oc:fixture] {exc}", file=sys.stderr, flush=True)
        return _unknown_error(state, f"[oc:fixture] {exc}"), [_failed(f"[oc:fixture] {exc}")]
    uses: list[edits.ToolUse] = []
    if reply.diff:  # the build agent edits the directory with its tools, file by file
        pause_s = directives.slow_edit_ms / 1000 if directives.attempt == 1 else 0.0
        pause = (lambda _i: aborted.wait(pause_s)) if pause_s > 0 else None
        uses = edits.perform(Path(directory), reply.diff, pause)
        if aborted.is_set():  # aborted mid-edit: the files edited so far stay edited
            info = shapes.info(ctx, usage=None, finish=None, error=_ABORTED)
            return _json({"info": info, "parts": [start]}), _ended(state, turn, info)
    body = _reply(state, session, ctx, asked, reply, start, directives.tools, uses)
    if not reply.billed:  # nothing billed: the daemon keeps the errored message anyway
        return _json(body), _ended(state, turn, body["info"])
    error = body["info"].get("error")
    said: _Events = [("session.error", {"error": error})] if error is not None else []
    return _json(body), [*said, ("message.updated", {"info": body["info"]}), *_idle()]


def _failed(message: str) -> tuple[str, dict[str, Any]]:
    """A turn the daemon failed inside: ``session.error`` UnknownError, and no idle."""
    return ("session.error", {"error": {"name": "UnknownError", "data": {"message": message}}})


def _remember_user(
    state: CompatState, session: _Session, ctx: shapes.MessageContext, asked: _Prompt
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": ctx.parent_id,
        "sessionID": ctx.session_id,
        "role": "user",
        "time": {"created": ctx.created_ms},
        "agent": asked.agent,
        "model": {"providerID": asked.provider_id, "modelID": asked.model_id},
    }
    if asked.fmt is not None:
        info["format"] = asked.fmt
    text = {"type": "text", "text": asked.text}
    session.messages.append({"info": info, "parts": [shapes.part(ctx, state.ids.new("prt"), text)]})
    return info


def _retry_until_aborted(state: CompatState, session: _Session, aborted: threading.Event) -> None:
    """Back off like the daemon does after an LLM HTTP 500 (about 5 s, then longer)."""
    deadline = time.monotonic() + RETRY_CAP_S
    attempt, pause = 1, 5.0
    while not aborted.is_set() and time.monotonic() < deadline:
        status = shapes.retry_status(attempt, shapes.now_ms() + int(pause * 1000))
        with state.lock:
            session.retry = status
        state.publish(session, "session.status", status=status)
        if aborted.wait(pause):
            return
        attempt, pause = attempt + 1, pause * 1.6
    aborted.set()  # gave up: answered as aborted, never as a made-up success


def _reply(
    state: CompatState,
    session: _Session,
    ctx: shapes.MessageContext,
    asked: _Prompt,
    reply: answers.Answer,
    start: dict[str, Any],
    tools: tuple[str, ...],
    uses: list[edits.ToolUse],
) -> dict[str, Any]:
    """The ``{info, parts}`` body; bills the session for what the model produced."""
    config = state.config
    if not reply.billed:
        return {"info": shapes.info(ctx, usage=None, finish=None, error=reply.error), "parts": []}
    if tools or uses:
        _tool_step(state, session, ctx, asked, tools, uses)
        ctx = replace(ctx, message_id=state.ids.new("msg"), created_ms=shapes.now_ms())
    parts = [start]
    if reply.structured is not None:
        body = shapes.tool_part(
            state.ids.new("call"),
            "StructuredOutput",
            reply.structured,
            "Structured output captured successfully.",
            "Structured Output",
        )
        parts.append(shapes.part(ctx, state.ids.new("prt"), body))
        produced = json.dumps(reply.structured)
    else:
        text = reply.text or ""
        now = shapes.now_ms()
        body = {"type": "text", "text": text, "time": {"start": now, "end": now}}
        parts.append(shapes.part(ctx, state.ids.new("prt"), body))
        produced = text
    usage = shapes.usage_for(config.seed, asked.text, asked.system, produced)
    finish = reply.finish or "stop"
    parts.append(shapes.part(ctx, state.ids.new("prt"), shapes.step_finish(finish, usage)))
    with state.lock:
        shapes.add_usage(session.data, usage)
        session.data["time"]["updated"] = shapes.now_ms()
    info = shapes.info(
        ctx, usage=usage, finish=finish, structured=reply.structured, error=reply.error
    )
    with state.lock:
        session.messages.append({"info": info, "parts": parts})
    return {"info": info, "parts": parts}


def _spend_step(
    state: CompatState, session: _Session, ctx: shapes.MessageContext, tokens: int
) -> None:
    """An earlier assistant message of the turn that read a file for ``tokens`` input
    tokens (``[oc:spend=N]``), billed and reported (``message.updated``) as the daemon
    reports each step's usage while the turn runs on."""
    step_ctx = replace(ctx, message_id=state.ids.new("msg"))
    directory = str(session.data["directory"])
    usage = shapes.Usage(input=tokens, output=0, reasoning=0, cache_read=0)
    read = shapes.tool_part(
        state.ids.new("call"), "read", shapes.tool_input("read", directory, "README.md"), "", "read"
    )
    parts = [
        shapes.part(step_ctx, state.ids.new("prt"), {"type": "step-start"}),
        shapes.part(step_ctx, state.ids.new("prt"), read),
        shapes.part(step_ctx, state.ids.new("prt"), shapes.step_finish("tool-calls", usage)),
    ]
    info = shapes.info(step_ctx, usage=usage, finish="tool-calls")
    with state.lock:
        shapes.add_usage(session.data, usage)
        session.messages.append({"info": info, "parts": parts})
    state.publish(session, "message.updated", info=info)


def _tool_step(
    state: CompatState,
    session: _Session,
    ctx: shapes.MessageContext,
    asked: _Prompt,
    tools: tuple[str, ...],
    uses: list[edits.ToolUse],
) -> None:
    """An earlier assistant message of the turn that calls ``tools`` and makes the edits
    ``uses`` (billed, not returned).

    The daemon answers a prompt with the turn's LAST message only; tool calls made on
    the way live in earlier messages, where the wrapper must go and look.
    """
    step_ctx = replace(ctx, message_id=state.ids.new("msg"))
    parts = [shapes.part(step_ctx, state.ids.new("prt"), {"type": "step-start"})]
    directory = str(session.data["directory"])
    for spec in tools:
        tool, _, target = spec.partition("@")
        tool_input = shapes.tool_input(tool, directory, target)
        body = shapes.tool_part(state.ids.new("call"), tool, tool_input, f"{tool} done", tool)
        parts.append(shapes.part(step_ctx, state.ids.new("prt"), body))
    for use in uses:
        body = shapes.edit_part(
            state.ids.new("call"), use.tool, use.tool_input, use.path, use.ok, use.output
        )
        parts.append(shapes.part(step_ctx, state.ids.new("prt"), body))
    said = ",".join([*tools, *(f"{u.tool}:{u.path}" for u in uses)])
    usage = shapes.usage_for(state.config.seed, asked.text, asked.system, said)
    parts.append(
        shapes.part(step_ctx, state.ids.new("prt"), shapes.step_finish("tool-calls", usage))
    )
    info = shapes.info(step_ctx, usage=usage, finish="tool-calls")
    with state.lock:
        shapes.add_usage(session.data, usage)
        session.messages.append({"info": info, "parts": parts})
