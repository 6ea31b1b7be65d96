"""A request body must arrive whole within KODO_BODY_TIMEOUT_S, or the request is 408.

gunicorn bounds the request line and headers (see ``gunicorn_conf``) but not the body:
a client trickling one byte a second would otherwise hold its connection (and, under a
threaded server, a thread) for as long as it likes. This middleware reads the body,
at most ``max_bytes + 1`` of it, under one deadline before the app runs; the app then
reads it from memory. Under gevent the deadline is a ``gevent.Timeout`` around the
whole read; elsewhere each receive is bounded by a socket timeout.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from gevent import Timeout, monkey

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CHUNK = 64 * 1024


class BodyTimeout(Exception):
    """The body did not arrive in time."""


class _SocketDeadline:
    """Per-receive socket timeouts for servers without gevent (the tests' in-process ones)."""

    def __init__(self, sock: object, seconds: float) -> None:
        self.sock = sock if isinstance(sock, socket.socket) else None
        self.seconds = seconds
        self.previous: float | None = None

    def __enter__(self) -> None:
        if self.sock is not None:
            self.previous = self.sock.gettimeout()
            self.sock.settimeout(self.seconds)

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.previous)


def read_body(stream: Any, limit: int, timeout_s: float, sock: object = None) -> bytes:
    """Up to ``limit`` bytes of ``stream``, all within ``timeout_s``; else BodyTimeout."""
    started = time.monotonic()
    chunks: list[bytes] = []
    size = 0
    cooperative = monkey.is_module_patched("socket")
    guard: Any = (
        Timeout(timeout_s, BodyTimeout) if cooperative else _SocketDeadline(sock, timeout_s)
    )
    try:
        with guard:
            while size < limit:
                if time.monotonic() - started > timeout_s:
                    raise BodyTimeout
                chunk = stream.read(min(CHUNK, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError as exc:  # a socket timeout without gevent
        raise BodyTimeout from exc
    return b"".join(chunks)


def _has_body(environ: dict[str, Any]) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    length = environ.get("CONTENT_LENGTH") or ""
    return length.isdigit() and int(length) > 0


class BodyDeadline:
    """WSGI middleware: the whole body within ``timeout_s``, at most ``max_bytes + 1``."""

    def __init__(self, app: WsgiApp, *, timeout_s: float, max_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not _has_body(environ):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > self.max_bytes:
            return self.app(environ, start_response)  # Flask answers 413 without reading
        try:
            body = read_body(
                environ["wsgi.input"],
                self.max_bytes + 1,
                self.timeout_s,
                environ.get("gunicorn.socket"),
            )
        except BodyTimeout:
            return self._timed_out(start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        return self.app(environ, start_response)

    def _timed_out(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        message = f"the request body did not arrive within {self.timeout_s:g}s"
        body = json.dumps(
            {"error": {"code": "request_timeout", "message": message, "details": {}}}
        ).encode()
        start_response(
            "408 Request Timeout",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        return [body]
