"""Serving the scripted model: a threaded stdlib HTTP server, in a thread or a process.

Stdlib on purpose: the body is a stream written as the answer is decided (a slow
answer trickles keep-alive comments, and a failed write is how an abort by the
daemon is noticed), which a plain ``http.server`` handler does directly.

One thread per connection: a held (``[oc:slow]``) answer keeps its thread asleep
between keep-alives, which is cheap enough for the few hundred held at once the
bench's real-daemon runs need (``held_peak`` in the stats shows how many); the
listen backlog is raised so a burst of that many connections is not refused.
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

from standins.scripted_llm import anthropic, stream
from standins.scripted_llm.request import BadChatRequest, ChatRequest, parse_chat_request
from standins.scripted_llm.script import Reply, decide

TRICKLE_S = 0.1


class _Stats:
    """What the server was asked, for tests (``GET /__kodo/stats``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chat_requests = 0
        self.replies: Counter[str] = Counter()
        self.wires: Counter[str] = Counter()
        self.usage: Counter[str] = Counter()
        self.request_bytes = 0  # a real provider bills these: the usage formula sees less
        self.refused_keys = 0
        self.held = 0  # answers being held back ([oc:slow]) right now
        self.held_peak = 0

    def hold(self, delta: int) -> None:
        with self.lock:
            self.held += delta
            self.held_peak = max(self.held_peak, self.held)

    def count(self, reply: Reply, wire: str, body_bytes: int) -> int:
        with self.lock:
            self.chat_requests += 1
            self.request_bytes += body_bytes
            self.replies[_kind(reply)] += 1
            self.wires[wire] += 1
            if reply.usage is not None and reply.http_status == 200:
                used = reply.usage
                self.usage.update(
                    input=used.input,
                    output=used.output,
                    reasoning=used.reasoning,
                    cache_read=used.cache_read,
                )
            return self.chat_requests

    def refused(self) -> None:
        with self.lock:
            self.refused_keys += 1

    def reset(self) -> None:
        with self.lock:
            self.chat_requests = 0
            self.replies.clear()
            self.wires.clear()
            self.usage.clear()
            self.request_bytes = 0
            self.refused_keys = 0
            self.held_peak = self.held

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "chat_requests": self.chat_requests,
                "replies": dict(self.replies),
                "wires": dict(self.wires),
                "usage": {k: self.usage[k] for k in ("input", "output", "reasoning", "cache_read")},
                "request_bytes": self.request_bytes,
                "refused_keys": self.refused_keys,
                "held": self.held,
                "held_peak": self.held_peak,
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a daemon opens its held streams in bursts

    def __init__(self, address: tuple[str, int], seed: int, api_key: str | None) -> None:
        super().__init__(address, _Handler)
        self.seed = seed
        self.api_key = api_key
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
        if self.path.rstrip("/") == anthropic.PATH:
            self._json(status, anthropic.error_body(status, message))
            return
        self._json(status, {"error": {"message": message, "type": kind, "code": None}})

    def _key_ok(self, wire: str) -> bool:
        """When the server was given a key, each request must carry it the wire's way."""
        expected = self.server.api_key
        if expected is None:
            return True
        if wire == "messages":
            given = self.headers.get("x-api-key")
        else:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if given == expected:
            return True
        self.server.stats.refused()
        self._error(401, "scripted LLM: wrong or missing API key", "authentication_error")
        return False

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
        route = self.path.rstrip("/")
        if route == "/v1/chat/completions":
            wire, parse = "chat", parse_chat_request
        elif route == anthropic.PATH:
            wire, parse = "messages", anthropic.parse_messages_request
        else:
            self._error(404, f"no route POST {self.path}", "not_found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self._key_ok(wire):
            return
        try:
            request: ChatRequest = parse(json.loads(body or b"null"))
        except (ValueError, BadChatRequest) as exc:
            self._error(400, f"bad request: {exc}", "invalid_request_error")
            return
        reply = decide(self.server.seed, request)
        nth = self.server.stats.count(reply, wire, len(body))
        if reply.http_status != 200:
            kind = "server_error" if reply.http_status >= 500 else "invalid_request_error"
            self._error(reply.http_status, reply.error_message, kind)
            return
        if wire == "messages":
            self._stream_messages(reply, nth, request.model)
        else:
            self._stream(reply, nth, request.model)

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def _linger(self, reply: Reply, keepalive: bytes) -> None:
        """Hold a slow answer back, writing ``keepalive`` (a hang-up raises here)."""
        if reply.slow_ms <= 0:
            return
        deadline = time.monotonic() + reply.slow_ms / 1000
        self.server.stats.hold(1)
        try:
            while time.monotonic() < deadline:
                time.sleep(min(TRICKLE_S, max(0.0, deadline - time.monotonic())))
                self.wfile.write(keepalive)
                self.wfile.flush()
        finally:
            self.server.stats.hold(-1)

    def _stream_messages(self, reply: Reply, nth: int, model: str) -> None:
        self._start_events()
        try:
            start = anthropic.message_start(reply, message_id=f"msg_kodo_{nth}", model=model)
            self.wfile.write(start)
            self.wfile.flush()
            self._linger(reply, anthropic.PING)
            tool_use_id = anthropic.call_id(reply, self.server.seed, nth)
            for data in anthropic.events(reply, tool_use_id=tool_use_id):
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon hung up (an abort): nothing more to say

    def _stream(self, reply: Reply, nth: int, model: str) -> None:
        completion_id = f"chatcmpl-kodo-{nth}"
        self._start_events()
        try:
            self.wfile.write(stream.role_chunk(completion_id=completion_id, model=model))
            self.wfile.flush()
            self._linger(reply, stream.KEEPALIVE)
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

    def __init__(
        self,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self._server = _Server((host, port), seed, api_key)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in ``/v1``), as a provider's ``baseURL``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def stats(self) -> dict[str, Any]:
        """What ``GET /__kodo/stats`` answers."""
        return self._server.stats.snapshot()

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
def running_llm(seed: int = 0, api_key: str | None = None) -> Iterator[str]:
    """Run a scripted LLM on a free 127.0.0.1 port for the ``with`` block; yield its base URL.

    With ``api_key``, a request without that key (``Authorization: Bearer`` on chat
    completions, ``x-api-key`` on messages) is refused with 401."""
    server = ScriptedLLM(seed=seed, api_key=api_key)
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
