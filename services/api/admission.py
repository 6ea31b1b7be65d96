"""At most KODO_API_ACTIVE requests of one API worker are handled at once; the rest queue.

Under gevent every open connection is a greenlet, and all of them share one event loop:
with a thousand requests in progress, a greenlet that sent a query resumes only after
every other ready greenlet has run its slice, so a pooled database connection is held
for a thousand slices per round trip and the pool runs dry (measured: POST /intents
burst of 300, 30 s pool timeouts, 500s). Admitting a bounded number of requests at once
keeps the loop's turn short, so connections come back in milliseconds; the others wait
their turn in arrival order, costing nothing but a socket. A request that waits longer
than KODO_API_QUEUE_S is answered 503 ``api_busy`` with ``Retry-After`` (nothing was
done). The body has been read by then (``body_deadline`` runs first), so a slow client
never holds a turn; a stream's turn ends when its first event is ready (the stream
itself is not counted). ``/healthz`` never queues: a health check says whether the
process answers, not how busy it is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .headers import STATIC_HEADERS, content_security_policy

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
RETRY_AFTER_S = 5
UNQUEUED_PATHS = frozenset({"/healthz"})


class Admission:
    """WSGI middleware: ``active`` requests at once, the rest wait up to ``wait_s``."""

    def __init__(self, app: WsgiApp, *, active: int, wait_s: float) -> None:
        if active < 1:
            raise ValueError("at least one request must be admitted at once")
        self.app = app
        self.active = active
        self.wait_s = wait_s
        # gevent patches threading: a waiting greenlet yields, and turns are given in order.
        self._turns = threading.BoundedSemaphore(active)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in UNQUEUED_PATHS:
            return self.app(environ, start_response)
        if not self._turns.acquire(timeout=self.wait_s):
            return self._busy(start_response)
        try:
            return self.app(environ, start_response)
        finally:
            self._turns.release()

    def _busy(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        message = (
            f"the API is busy: this request waited {self.wait_s:g}s for one of"
            f" {self.active} turns (KODO_API_ACTIVE, KODO_API_QUEUE_S); nothing was done,"
            f" retry after {RETRY_AFTER_S} seconds"
        )
        error = {"code": "api_busy", "message": message, "details": {"rule": ["api_queue_wait"]}}
        body = json.dumps({"error": error}).encode()
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(RETRY_AFTER_S)),
                # Flask's after_request never runs for it: the headers every answer has
                *STATIC_HEADERS.items(),
                ("Content-Security-Policy", content_security_policy(None)),
            ],
        )
        return [body]
