"""Noticing at once that an event stream's client hung up.

A stream writes only at its run's changes and its keepalives (every 15 s), and a write
is how a server learns that its client closed: until the next keepalive the stream held
its slot, so a client that closed one stream and opened the next at its token's limit
(``KODO_SSE_PER_TOKEN``) was refused with 429 for up to 15 s (helper-87 measured 14.1 s).
Under gevent (the deployed API) a greenlet per stream waits for the client's socket to
read ready: an end of stream or a reset ends the stream at once. Bytes the client sent
(a pipelined request) are left for gunicorn to read; the watch then stops, and the
keepalive notices a hang-up as before.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import gevent
from gevent import monkey
from gevent.socket import wait_read

from shared.db.events import Mark, Subscription


def end_on_hang_up(sock: object, sub: Subscription) -> Callable[[], None]:
    """Watch ``sock`` (the stream's client socket) and end ``sub``'s stream when the
    client hangs up; returns what stops the watch (call it when the stream ends).
    Nothing is watched outside gevent, nor without the socket (a test's server)."""
    if not isinstance(sock, socket.socket) or not monkey.is_module_patched("socket"):
        return lambda: None

    def watch() -> None:
        try:
            wait_read(sock.fileno())
            said = sock.recv(1, socket.MSG_PEEK)  # a peek: a pipelined request stays
        except OSError:  # reset, or the socket already closed
            said = b""
        if not said:
            sub.deliver(Mark.CLOSING)

    watcher = gevent.spawn(watch)
    return lambda: watcher.kill(block=False)
