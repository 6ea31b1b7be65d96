"""Serving the scripted model: a threaded stdlib HTTP server, in a thread or a process.

Stdlib on purpose: the body is a stream written as the answer is decided (a slow
answer trickles keep-alive comments, and a failed write is how an abort by the
daemon is noticed), which a plain ``http.server`` handler does directly.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from standins.scripted_llm import stream
from standins.scripted_llm.request import BadChatRequest, parse_chat_request
from standins.scripted_llm.script import Reply, decide

TRICKLE_S = 0.1


class _Stats:
    """What the server was asked, for tests (``GET /__kodo/stats``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chat_requests = 0
        self.replies: Counter[str] = Counter()

    def count(self, kind: str) -> int:
        with self.lock:
            self.chat_requests += 1
            self.replies[kind] += 1
            return self.chat_requests

    def reset(self) -> None:
        with self.lock:
            self.chat_requests = 0
            self.replies.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"chat_requests": self.chat_requests, "replies": dict(self.replies)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], seed: int) -> None:
        super().__init__(address, _Handler)
        self.seed = seed
        self.stats = _Stats()


def _kind(reply: Reply) -> str:
    if reply.http_status != 200:
        return f"http{reply.http_status}"
    return f"tool:{reply.tool}" if reply.tool is not None else "text"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one response per connection; the stream ends on close

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, value: object) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": None}})

    def do_GET(self) -> None:
        if self.path == "/__kodo/stats":
            self._json(200, self.server.stats.snapshot())
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "kodo-scripted"}]})
        else:
            self._error(404, f"no route GET {self.path}", "not_found")

    def do_POST(self) -> None:
        if self.path == "/__kodo/reset":
            self.server.stats.reset()
            self._json(200, True)
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route POST {self.path}", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = parse_chat_request(json.loads(self.rfile.read(length) or b"null"))
        except (ValueError, BadChatRequest) as exc:
            self._error(400, f"bad request: {exc}", "invalid_request_error")
            return
        reply = decide(self.server.seed, request)
        nth = self.server.stats.count(_kind(reply))
        if reply.http_status != 200:
            kind = "server_error" if reply.http_status >= 500 else "invalid_request_error"
            self._error(reply.http_status, reply.error_message, kind)
            return
        self._stream(reply, nth, request.model)

    def _stream(self, reply: Reply, nth: int, model: str) -> None:
        completion_id = f"chatcmpl-kodo-{nth}"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            self.wfile.write(stream.role_chunk(completion_id=completion_id, model=model))
            self.wfile.flush()
            deadline = time.monotonic() + reply.slow_ms / 1000
            while time.monotonic() < deadline:
                time.sleep(min(TRICKLE_S, max(0.0, deadline - time.monotonic())))
                self.wfile.write(stream.KEEPALIVE)
                self.wfile.flush()
            call_id = reply.call_id(self.server.seed, nth)
            for data in stream.chunks(
                reply, completion_id=completion_id, model=model, call_id=call_id
            ):
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon hung up (an abort): nothing more to say


class ScriptedLLM:
    """One bound server (port 0 picks a free port)."""

    def __init__(self, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), seed)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in ``/v1``), as a provider's ``baseURL``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def running_llm(seed: int = 0) -> Iterator[str]:
    """Run a scripted LLM on a free 127.0.0.1 port for the ``with`` block; yield its base URL."""
    server = ScriptedLLM(seed=seed)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT (``kodo oc up --scripted-llm`` runs this)."""
    parser = argparse.ArgumentParser(prog="python -m standins.scripted_llm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = ScriptedLLM(seed=args.seed, host=args.host, port=args.port)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(f"scripted-llm listening on {server.base_url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
