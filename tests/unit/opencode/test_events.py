"""The SSE decoder against the daemon's own event streams (captured from 1.18.33)."""

from __future__ import annotations

import json
import time

import pytest

from shared.opencode.events import OcEvent, SseDecoder, parse_event
from tests.unit.opencode.captures import FIXTURES


def _decode(
    raw: bytes, *, wrapped: bool = False, chunk: int = 0
) -> tuple[list[OcEvent], SseDecoder]:
    decoder = SseDecoder(wrapped=wrapped)
    pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events, decoder


def _capture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _turn(events: list[OcEvent]) -> list[tuple[str, str | None]]:
    """The events a collector acts on: status changes, idle and error, in order."""
    wanted = ("session.status", "session.idle", "session.error")
    return [(e.type, e.status or e.error_name) for e in events if e.type in wanted]


@pytest.mark.parametrize("chunk", [0, 1, 7, 4096])
def test_a_structured_async_turn_goes_busy_then_idle_however_it_is_chunked(chunk: int) -> None:
    events, decoder = _decode(_capture("events.prompt-async.structured.sse.txt"), chunk=chunk)
    assert events[0].type == "server.connected"
    assert events[-1].type == "server.heartbeat"
    assert _turn(events) == [
        ("session.status", "busy"),
        ("session.status", "busy"),
        ("session.status", "idle"),
        ("session.idle", None),
    ]
    assert not decoder.skipped
    assert decoder.parsed == len(events)
    assert all(e.directory is None for e in events)  # /event names no directory
    assert {e.session_id for e in events if e.ends_turn} == {events[1].session_id}


def test_the_answer_is_complete_in_message_updated_before_the_idle_event() -> None:
    events, _ = _decode(_capture("events.prompt-async.structured.sse.txt"))
    idle = next(i for i, e in enumerate(events) if e.type == "session.idle")
    done = [
        e.properties["info"]
        for e in events[:idle]
        if e.type == "message.updated" and e.properties["info"].get("role") == "assistant"
    ]
    assert "completed" in done[-1]["time"]
    assert done[-1]["structured"]["files"][0]["path"] == "README.md"


def test_an_aborted_turn_errors_then_goes_idle_twice() -> None:
    events, decoder = _decode(_capture("events.prompt-async.aborted.sse.txt"))
    assert _turn(events) == [
        ("session.status", "busy"),
        ("session.status", "busy"),
        ("session.error", "MessageAbortedError"),
        ("session.status", "idle"),
        ("session.idle", None),
        ("session.status", "idle"),
        ("session.idle", None),
    ]
    assert not decoder.skipped


def test_an_unknown_agent_ends_with_session_error_and_never_idle() -> None:
    events, _ = _decode(_capture("events.prompt-async.unknown-agent.sse.txt"))
    turn = _turn(events)
    assert turn == [("session.error", "UnknownError"), ("session.error", "UnknownError")]
    assert all(e.ends_turn for e in events if e.type == "session.error")


def test_the_global_stream_names_each_events_directory_and_skips_sync_copies() -> None:
    events, decoder = _decode(
        _capture("global-events.prompt-async.structured.sse.txt"), wrapped=True
    )
    assert events[0].type == "server.connected"
    assert events[0].directory is None
    turn = [e for e in events if e.ends_turn]
    assert [e.type for e in turn] == ["session.idle"]
    assert turn[0].directory == "/srv/oc/workspaces/calc"
    assert decoder.skipped["sync"] > 0
    assert set(decoder.skipped) == {"sync"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("not json", "not-json"),
        ("[1]", "not-an-object"),
        ('{"properties": {}}', "no-type"),
        ('{"type": "session.idle"}', "no-properties"),
        ('{"type": "session.idle", "properties": []}', "no-properties"),
        ('{"id": 7, "type": "session.idle", "properties": {}}', "bad-id"),
        ("[" * 100000 + "]" * 100000, "misshapen"),
        ("[" * 65 + "]" * 65, "misshapen"),
    ],
)
def test_an_event_of_another_shape_is_skipped_with_its_reason(data: str, reason: str) -> None:
    assert parse_event(data, wrapped=False) == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"directory": "/r", "payload": 3}', "no-payload"),
        ('{"directory": 3, "payload": {"type": "x", "properties": {}}}', "bad-directory"),
        ('{"type": "session.idle", "properties": {}}', "no-payload"),
    ],
)
def test_a_global_event_of_another_shape_is_skipped(data: str, reason: str) -> None:
    assert parse_event(data, wrapped=True) == reason


def test_fields_comments_and_line_endings_of_the_sse_standard() -> None:
    good = json.dumps({"type": "session.idle", "properties": {"sessionID": "ses_1"}})
    raw = (
        ": a comment\r\n"
        "event: ignored\r\n"
        "id: 4\r\n"
        f"data: {good[:1]}\r\n"
        f"data:{good[1:]}\r\n"
        "\r\n"
        f"data: {good}\r\r"
        "data: {broken\n\n"
        "\n\n"
    ).encode()
    for chunk in (0, 1, 3):
        events, decoder = _decode(raw, chunk=chunk)
        assert [e.session_id for e in events] == ["ses_1", "ses_1"]
        assert decoder.skipped == {"not-json": 1}


def test_an_event_over_the_cap_is_dropped_and_counted_and_the_next_one_still_parses() -> None:
    big = json.dumps({"type": "message.updated", "properties": {"x": "y" * 5000}})
    small = json.dumps({"type": "session.idle", "properties": {"sessionID": "ses_2"}})
    raw = f"data: {big}\n\ndata: {small}\n\n".encode()
    for chunk in (0, 100):
        decoder = SseDecoder(wrapped=False, max_event_bytes=1000)
        pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
        events = [e for piece in pieces for e in decoder.feed(piece)]
        assert [e.session_id for e in events] == ["ses_2"]
        assert decoder.skipped == {"too-large": 1}


def test_status_and_error_accessors_answer_only_for_their_event_type() -> None:
    idle = OcEvent("session.idle", {"sessionID": "s", "status": {"type": "busy"}, "error": {}})
    assert idle.status is None
    assert idle.error_name is None
    assert idle.ends_turn
    anonymous = OcEvent("session.idle", {})
    assert not anonymous.ends_turn
    odd = OcEvent("session.status", {"sessionID": 5, "status": {"type": 1}})
    assert odd.session_id is None
    assert odd.status is None


# -- only some types: the rest are not parsed (the collector reads turn ends only) ----

ENDS = frozenset({"session.idle", "session.error"})


@pytest.mark.parametrize(
    ("capture", "wrapped"),
    [
        ("events.prompt-async.structured.sse.txt", False),
        ("global-events.prompt-async.structured.sse.txt", True),
    ],
)
def test_only_the_wanted_types_are_yielded_and_the_others_go_unparsed(
    capture: str, wrapped: bool
) -> None:
    raw = _capture(capture)
    every, _ = _decode(raw, wrapped=wrapped)
    decoder = SseDecoder(wrapped=wrapped, only=ENDS)
    events = [
        event
        for piece in (raw[i : i + 7] for i in range(0, len(raw), 7))
        for event in decoder.feed(piece)
    ]
    assert events == [e for e in every if e.type in ENDS]
    assert [e.type for e in events] == ["session.idle"]
    # the daemon writes no \u escapes: everything else went by without json.loads
    assert decoder.parsed == len(events)
    assert decoder.unread > 0
    assert not decoder.skipped


def test_a_model_text_naming_a_wanted_type_is_parsed_then_judged_by_its_own_type() -> None:
    said = {"type": "message.part.updated", "properties": {"part": {"text": '"session.idle"'}}}
    decoder = SseDecoder(wrapped=False, only=ENDS)
    assert decoder.feed(f"data: {json.dumps(said)}\n\n".encode()) == []
    assert (decoder.parsed, decoder.unread) == (0, 1)


def test_a_wanted_type_written_with_escapes_is_still_read() -> None:
    escaped = '{"type": "session\\u002eidle", "properties": {"sessionID": "ses_1"}}'
    assert json.loads(escaped)["type"] == "session.idle"
    decoder = SseDecoder(wrapped=False, only=ENDS)
    [event] = decoder.feed(f"data: {escaped}\n\n".encode())
    assert (event.type, event.session_id) == ("session.idle", "ses_1")


def test_a_misshapen_event_of_an_unwanted_type_is_not_even_read() -> None:
    decoder = SseDecoder(wrapped=False, only=ENDS)
    assert decoder.feed(b"data: " + b"[" * 100 + b"]" * 100 + b"\n\n") == []
    assert (decoder.unread, decoder.skipped["misshapen"]) == (1, 0)
    idle = b'data: {"type": "session.idle", "properties": {"sessionID": "ses_1"}}\n\n'
    assert [e.session_id for e in decoder.feed(idle)] == ["ses_1"]  # the next one is read


@pytest.mark.parametrize("blank", [b"\n", b"\r"], ids=["lf", "cr"])
def test_a_chunk_of_blank_lines_is_read_in_time_linear_in_it(blank: bytes) -> None:
    """Each line's end was searched for from its start to the buffer's end for the
    ending the buffer lacked: a 1 MiB read of blank lines was a minute of the
    collector's CPU (a daemon's stream, red-team helper-128)."""
    decoder = SseDecoder(wrapped=True)
    started = time.process_time()
    assert decoder.feed(blank * (1 << 20)) == []
    assert time.process_time() - started < 5.0
