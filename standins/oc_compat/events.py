"""The event streams: ``GET /event`` (one directory) and ``GET /global/event`` (all).

Framing and shapes as ``opencode serve`` 1.18.33 sends them (see
shared/opencode/events.py and tests/fixtures/opencode/*events*.sse.txt): one
``data: <json>`` line and a blank line per event; ``server.connected`` first, then
``server.heartbeat`` after every ``heartbeat_s`` of silence; ``/event`` sends
``{id, type, properties}``, ``/global/event`` wraps each as
``{directory, project, payload}`` (the server events without ``directory``). The
daemon's duplicate ``sync`` payloads are not sent.

An open stream is parked on its queue: a thread on cheroot (server.py), a greenlet in
the ``kodo oc-compat`` process (green.py). The queue and lock are looked up on their
modules when made, so the patched process gets gevent's.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from standins.oc_compat import shapes

HEARTBEAT_S = 10.0


@dataclass(eq=False)
class _Subscriber:
    directory: str | None  # None: the global stream
    inbox: queue.SimpleQueue[bytes | None] = field(default_factory=lambda: queue.SimpleQueue())


def _frame(value: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


class EventBus:
    """Fan-out of published events to the open streams that want them."""

    def __init__(self, ids: shapes.IdFactory, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._ids = ids
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self.published = 0

    def _event(self, kind: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"id": self._ids.new("evt"), "type": kind, "properties": properties}

    def publish(self, directory: str, project: str, kind: str, properties: dict[str, Any]) -> None:
        event = self._event(kind, properties)
        plain = _frame(event)
        wrapped = _frame({"directory": directory, "project": project, "payload": event})
        with self._lock:
            self.published += 1
            for subscriber in self._subscribers:
                if subscriber.directory is None:
                    subscriber.inbox.put(wrapped)
                elif subscriber.directory == directory:
                    subscriber.inbox.put(plain)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def stream(self, directory: str | None) -> Iterator[bytes]:
        """One client's stream (subscribed now, before the first byte is sent)."""
        subscriber = _Subscriber(directory)
        with self._lock:
            self._subscribers.add(subscriber)
        return self._frames(subscriber)

    def _server_event(self, subscriber: _Subscriber, kind: str) -> bytes:
        event = self._event(kind, {})
        return _frame({"payload": event} if subscriber.directory is None else event)

    def _frames(self, subscriber: _Subscriber) -> Iterator[bytes]:
        try:
            yield self._server_event(subscriber, "server.connected")
            while True:
                try:
                    frame = subscriber.inbox.get(timeout=self._heartbeat_s)
                except queue.Empty:
                    yield self._server_event(subscriber, "server.heartbeat")
                    continue
                if frame is None:
                    return  # the server is stopping
                yield frame
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)

    def close_all(self) -> None:
        """End every open stream (server shutdown)."""
        with self._lock:
            for subscriber in self._subscribers:
                subscriber.inbox.put(None)
