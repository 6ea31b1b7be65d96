"""The daemon's event stream (``GET /event``, ``GET /global/event``) as kodo reads it.

Pure: bytes in, :class:`OcEvent` records out; the transport lives in
:mod:`shared.opencode.client`. Shapes observed on ``opencode serve`` 1.18.33 (fixtures
in tests/fixtures/opencode/events.*.sse.txt):

* Framing: ``text/event-stream``, chunked; every event is one ``data: <json>`` line and
  a blank line. No ``event:``, ``id:`` or ``retry:`` fields are sent (they are ignored
  if they ever are), nor comment lines.
* ``GET /event?directory=D`` streams the events of directory D only, each
  ``{"id": "evt_…", "type": …, "properties": {…}}``, with no directory in it.
* ``GET /global/event`` streams every directory's, each wrapped
  ``{"directory": D, "project": P, "payload": {id, type, properties}}``;
  ``server.connected`` and ``server.heartbeat`` come without ``directory``. It also
  carries ``{"type": "sync", "syncEvent": …}`` payloads, duplicates of the plain
  events for the daemon's own replication: skipped, counted as ``sync``.
* The first event is ``server.connected``; ``server.heartbeat`` follows every 10 s.

Every event is hostile input: one that does not parse into the shape above is
skipped and counted by reason (:attr:`SseDecoder.skipped`), never guessed at, and an
event larger than the byte cap is dropped unread past the cap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.opencode.json_shape import shape_problem, strict_loads

SESSION_STATUS = "session.status"
SESSION_IDLE = "session.idle"
SESSION_ERROR = "session.error"
SERVER_CONNECTED = "server.connected"
SERVER_HEARTBEAT = "server.heartbeat"
MESSAGE_UPDATED = "message.updated"

HEARTBEAT_S = 10.0
"""The daemon's heartbeat period: a reader's timeout must be longer than this."""

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
"""One event's cap; a ``message.updated`` repeats a whole structured answer."""


@dataclass(frozen=True)
class OcEvent:
    """One event: its ``type``, ``properties``, id, and directory (global stream only)."""

    type: str
    properties: dict[str, Any]
    id: str | None = None
    directory: str | None = None

    @property
    def session_id(self) -> str | None:
        value = self.properties.get("sessionID")
        return value if isinstance(value, str) else None

    @property
    def status(self) -> str | None:
        """``busy``, ``idle`` or ``retry`` for a ``session.status`` event, else None."""
        raw = self.properties.get("status")
        kind = raw.get("type") if isinstance(raw, dict) and self.type == SESSION_STATUS else None
        return kind if isinstance(kind, str) else None

    @property
    def error_name(self) -> str | None:
        """The error's ``name`` for a ``session.error`` event, else None."""
        raw = self.properties.get("error")
        name = raw.get("name") if isinstance(raw, dict) and self.type == SESSION_ERROR else None
        return name if isinstance(name, str) else None

    @property
    def ends_turn(self) -> bool:
        """``session.idle`` or ``session.error``: the turn of :attr:`session_id` may be over
        (a turn refused before it started, e.g. an unknown agent, ends with
        ``session.error`` and no ``session.idle``)."""
        return self.type in (SESSION_IDLE, SESSION_ERROR) and self.session_id is not None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_event(data: str, *, wrapped: bool) -> OcEvent | str:
    """The event one ``data`` field holds, or the reason it is skipped.

    ``wrapped``: the data comes from ``/global/event`` (``{directory, project, payload}``).
    """
    if shape_problem(data.encode()) is not None:  # a tool call's input is the model's
        return "misshapen"
    try:
        value: object = strict_loads(data)
    except (ValueError, RecursionError):
        return "not-json"
    if not isinstance(value, dict):
        return "not-an-object"
    directory: str | None = None
    if wrapped:
        if "directory" in value and not isinstance(value["directory"], str):
            return "bad-directory"
        directory = _str_or_none(value.get("directory"))
        value = value.get("payload")
        if not isinstance(value, dict):
            return "no-payload"
    kind = value.get("type")
    if kind == "sync":
        return "sync"
    if not isinstance(kind, str) or not kind:
        return "no-type"
    properties = value.get("properties")
    if not isinstance(properties, dict):
        return "no-properties"
    if "id" in value and not isinstance(value["id"], str):
        return "bad-id"
    return OcEvent(kind, properties, _str_or_none(value.get("id")), directory)


def may_be_one_of(data: bytes, types: frozenset[bytes]) -> bool:
    """Whether the JSON text ``data`` can hold a ``type`` among ``types`` (UTF-8 bytes).

    A JSON string equal to one of them holds its bytes literally unless a character is
    written as a ``\\u`` escape: an event with neither is none of them, whatever else it
    says (a model's text naming a type only makes it parsed, then judged by its type).
    """
    return b"\\u" in data or any(kind in data for kind in types)


@dataclass
class SseDecoder:
    """Incremental ``text/event-stream`` decoder: :meth:`feed` bytes, get events.

    Lines end with LF, CRLF or CR; ``data:`` lines of one event are joined with LF;
    a blank line dispatches; comment lines and other fields are ignored.

    ``only``: the event types the reader wants. An event that cannot be one of them
    (:func:`may_be_one_of`) is counted in :attr:`unread` and never parsed: the
    collector reads ``session.idle`` and ``session.error`` out of a stream that
    carries every streamed part of every turn of the daemon.
    """

    wrapped: bool
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    only: frozenset[str] | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    parsed: int = 0
    unread: int = 0
    _pending: bytes = b""
    _data: list[bytes] = field(default_factory=list)
    _size: int = 0
    _oversize: bool = False

    def feed(self, chunk: bytes) -> list[OcEvent]:
        events: list[OcEvent] = []
        buffer = self._pending + chunk
        start = 0
        ends = _LineEnds(buffer)
        while True:
            cut = ends.after(start)
            if cut is None:
                break
            end, after = cut
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._pending = buffer[start:]
        if len(self._pending) > self.max_event_bytes:  # one endless line: drop what we hold
            self._oversize = True
            self._pending = b""
        return events

    def _line(self, raw: bytes) -> OcEvent | None:
        if not raw:
            return self._dispatch()
        if self._oversize:
            return None
        name, colon, rest = raw.partition(b":")
        if not colon or name != b"data":
            return None  # a comment (":"), or a field kodo has no use for
        if rest.startswith(b" "):
            rest = rest[1:]
        self._size += len(rest) + 1
        if self._size > self.max_event_bytes:
            self._oversize = True
            self._data.clear()
            return None
        self._data.append(rest)
        return None

    def __post_init__(self) -> None:
        self._wanted = None if self.only is None else frozenset(kind.encode() for kind in self.only)

    def _dispatch(self) -> OcEvent | None:
        if self._oversize:
            self.skipped["too-large"] += 1
        elif self._data:
            raw = b"\n".join(self._data)
            if self._wanted is not None and not may_be_one_of(raw, self._wanted):
                self.unread += 1
                self._reset()
                return None
            parsed = parse_event(raw.decode("utf-8", "replace"), wrapped=self.wrapped)
            if (
                isinstance(parsed, OcEvent)
                and self.only is not None
                and parsed.type not in self.only
            ):
                self.unread += 1
                self._reset()
                return None
            if isinstance(parsed, OcEvent):
                self.parsed += 1
                self._reset()
                return parsed
            self.skipped[parsed] += 1
        self._reset()
        return None

    def _reset(self) -> None:
        self._data.clear()
        self._size = 0
        self._oversize = False


class _LineEnds:
    """Where each line of one buffer ends: the next LF and CR are searched for once and
    kept until passed, since a search from every line start for a byte the buffer lacks
    (a CR in a stream of LF lines) scanned the buffer's rest once per line: quadratic in
    a chunk of blank lines (0.8 s per MiB at 64 KiB reads; red-team helper-128)."""

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self._lf = buffer.find(b"\n")
        self._cr = buffer.find(b"\r")

    def after(self, start: int) -> tuple[int, int] | None:
        """Where the line from ``start`` ends and the next begins; None if it has not
        ended. A CR as the last byte may be the first half of a CRLF: wait for more."""
        buffer = self.buffer
        if self._lf != -1 and self._lf < start:
            self._lf = buffer.find(b"\n", start)
        if self._cr != -1 and self._cr < start:
            self._cr = buffer.find(b"\r", start)
        lf, cr = self._lf, self._cr
        if cr == -1 or (lf != -1 and lf < cr):
            return None if lf == -1 else (lf, lf + 1)
        if cr + 1 == len(buffer):
            return None
        return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)
