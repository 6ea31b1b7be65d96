"""The collector holds ended sessions by id, each bounded, not up to a megabyte each
(red-team helper-128).

``EndedSessions`` keeps up to PENDING_MAX (10 000) ended sessions between the stream's
reader and the follower, and ``ended_session`` takes any non-empty ``sessionID`` string of
a ``session.idle`` event, up to the event cap (1 MiB). An event stream whose payloads
are hostile (the brief's threat model) names a fresh ~1 MB id per event: the pending map
grows by a megabyte an event, to ~10 GB before PENDING_MAX stops it, and the follower
then sends batches of 500 such ids (~500 MB of parameters) to Postgres in one statement.
No session kodo opened has such an id (the daemon's are ``ses_`` and 26 characters).

Measured: 100 events of 1 MB ids left 100 MB held by ``EndedSessions``.

What holds once fixed: an id past a sane length (or not of the daemon's shape) is
skipped and counted, and what the reader holds stays small whatever the ids.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

from services.worker.collector import ENDED, EndedSessions, _read_ended
from shared.opencode.events import OcEvent, SseDecoder

EVENTS = 100
ID_CHARS = 1_000_000
MAX_HELD = 20 << 20


def _stream() -> Iterator[OcEvent]:
    decoder = SseDecoder(wrapped=True, only=ENDED)
    for i in range(EVENTS):
        payload = {
            "directory": "/w/run",
            "payload": {
                "id": f"evt_{i}",
                "type": "session.idle",
                "properties": {"sessionID": f"ses_{i:06d}" + "x" * ID_CHARS},
            },
        }
        yield from decoder.feed(b"data: " + json.dumps(payload).encode() + b"\n\n")


def test_pending_sessions_with_huge_ids_hold_bounded_memory() -> None:
    ended = EndedSessions()
    tracemalloc.start()
    try:
        _read_ended(_stream(), ended)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < MAX_HELD, (
        f"{EVENTS} session.idle events with {ID_CHARS}-character ids left"
        f" {held >> 20} MB held by the collector's pending sessions"
    )
