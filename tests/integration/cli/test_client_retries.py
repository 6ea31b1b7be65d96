"""The CLI's API client sends a request again after a 503/429 with Retry-After, only
when sending it twice is harmless. Against a real HTTP server on loopback that answers
from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.cli.client import RETRIES, ApiClient, ApiError

pytestmark = pytest.mark.integration


class Scripted:
    """Answers each request with the next (status, headers) of its script; 201 after."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.seen: list[tuple[str, str, str | None]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Scripted]]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            state.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
            status, headers = state.script.pop(0) if state.script else (201, {})
            body = json.dumps(
                {"intentId": "i-1"}
                if status < 400
                else {"error": {"code": "busy", "message": "busy"}}
            ).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


BUSY = (503, {"Retry-After": "0"})


def test_a_submit_with_its_key_is_sent_again_with_the_same_key(
    server: tuple[str, Scripted],
) -> None:
    url, state = server
    state.script = [BUSY, (429, {"Retry-After": "0"})]
    with ApiClient(url) as api:
        assert api.post("/intents", {"goal": "g"}, idempotency_key="cli-1") == {"intentId": "i-1"}
    assert state.seen == [("POST", "/intents", "cli-1")] * 3


def test_a_post_that_is_not_safe_to_repeat_is_never_sent_twice(
    server: tuple[str, Scripted],
) -> None:
    url, state = server
    state.script = [BUSY]
    with ApiClient(url) as api, pytest.raises(ApiError):
        api.post("/intents", {"goal": "g"})
    assert len(state.seen) == 1


@pytest.mark.parametrize("path", ["/intents/x/run", "/runs/x/approve-plan", "/runs/x/cancel"])
def test_posts_the_api_documents_as_idempotent_are_repeated(
    server: tuple[str, Scripted], path: str
) -> None:
    url, state = server
    state.script = [BUSY]
    with ApiClient(url) as api:
        api.post(path)
    assert [p for _, p, _ in state.seen] == [path, path]


def test_a_busy_answer_without_retry_after_is_final(server: tuple[str, Scripted]) -> None:
    url, state = server
    state.script = [(503, {})]
    with ApiClient(url) as api, pytest.raises(ApiError):
        api.get("/runs/x")
    assert len(state.seen) == 1


def test_retries_are_bounded(server: tuple[str, Scripted]) -> None:
    url, state = server
    state.script = [BUSY] * (RETRIES + 5)
    with ApiClient(url) as api, pytest.raises(ApiError):
        api.get("/runs/x")
    assert len(state.seen) == RETRIES + 1
