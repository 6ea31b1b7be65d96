"""Transport failures: unreachable daemons, slow answers and bodies that are not JSON."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from shared.opencode.client import ModelRef, OpenCodeClient
from shared.opencode.errors import (
    OpenCodePermanentError,
    OpenCodeTimeout,
    OpenCodeUnreachable,
)
from standins.oc_compat import running_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>not json</html>" if self.path.startswith("/global") else b'["a list"]'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def garbage_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_closed_port_is_unreachable_and_wait_healthy_gives_up_by_its_deadline() -> None:
    with OpenCodeClient(f"http://127.0.0.1:{free_port()}", timeout_s=5) as client:
        with pytest.raises(OpenCodeUnreachable):
            client.health()
        with pytest.raises(OpenCodeTimeout):
            client.wait_healthy(deadline_s=0.3)


def test_a_non_json_or_wrongly_shaped_body_fails_closed(garbage_url: str, tmp_path: Path) -> None:
    with OpenCodeClient(garbage_url, timeout_s=5) as client:
        with pytest.raises(OpenCodePermanentError, match="not JSON"):
            client.health()
        with pytest.raises(OpenCodePermanentError, match="expected an object"):
            client.get_session("ses_x", directory=str(tmp_path))


def test_a_prompt_slower_than_its_timeout_raises_a_timeout(tmp_path: Path) -> None:
    with running_server() as url, OpenCodeClient(url, timeout_s=5) as client:
        session = client.create_session(directory=str(tmp_path), title="t")["id"]
        with pytest.raises(OpenCodeTimeout):
            client.prompt(
                session,
                directory=str(tmp_path),
                agent="plan",
                model=ModelRef("kodo", "kodo-scripted"),
                text="[oc:slow=2000]",
                tools={},
                format=None,
                timeout_s=0.2,
            )
        assert client.abort(session, directory=str(tmp_path)) is True


class _Hung(BaseHTTPRequestHandler):
    """Answers every GET (a session) and POST (``true``), but only after 5 s."""

    def do_GET(self) -> None:
        self._late(json.dumps({"id": "ses_x", "tokens": {}, "cost": 0}).encode())

    def do_POST(self) -> None:
        self._late(b"true")

    def _late(self, body: bytes) -> None:
        time.sleep(5)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


BOUNDED: dict[str, Callable[[OpenCodeClient, str], object]] = {
    "session totals": lambda c, d: c.get_session("ses_x", directory=d, timeout_s=0.3),
    "abort": lambda c, d: c.abort("ses_x", directory=d, timeout_s=0.3),
    "status": lambda c, d: c.busy_sessions(directory=d, timeout_s=0.3),
    "dispose": lambda c, d: c.dispose_instance(directory=d, timeout_s=0.3),
}


@pytest.mark.parametrize("request_", BOUNDED.values(), ids=BOUNDED.keys())
def test_a_request_given_its_own_timeout_gives_up_by_it(
    tmp_path: Path, request_: Callable[[OpenCodeClient, str], object]
) -> None:
    """A failed call's totals, an abort, and a release's status read and dispose (sent
    holding a run's row lock) wait a bound of their own, not the client's (which a
    prompt may need long): a hung daemon does not hold them."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hung)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with OpenCodeClient(url, timeout_s=30) as client, pytest.raises(OpenCodeTimeout):
            request_(client, str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()


PW = "pw:1"


class _Recorder(BaseHTTPRequestHandler):
    """Answers ``true`` to anything and keeps what each request said."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        _Recorder.seen.append((self.command, self.path, headers, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_requests_carry_the_credentials_the_directory_and_the_body_as_sent() -> None:
    """What the daemon receives: Basic auth with the configured user, the directory as
    a percent-encoded query parameter under the base URL's path, a compact JSON body
    with its type and length, an empty POST with a zero length, no compression."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        url = f"http://127.0.0.1:{port}/oc/"
        with OpenCodeClient(url, timeout_s=5, username="kodo-ops", password=PW) as client:
            assert client.abort("ses_1", directory="/w/a b&c=d") is True
            client._call("POST", "/session", directory="/w", body={"title": "tïtle"})
            client.delete_session("ses/2", directory="/w")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    (abort, create, delete) = _Recorder.seen
    token = base64.b64encode(f"kodo-ops:{PW}".encode()).decode()
    for _, _, headers, _ in _Recorder.seen:
        assert headers["authorization"] == f"Basic {token}"
        assert headers["host"] == f"127.0.0.1:{port}"
        assert headers["accept-encoding"] == "identity"
    assert abort[:2] == ("POST", "/oc/session/ses_1/abort?directory=%2Fw%2Fa%20b%26c%3Dd")
    assert abort[2]["content-length"] == "0"
    assert abort[3] == b""
    assert create[1] == "/oc/session?directory=%2Fw"
    assert create[2]["content-type"] == "application/json"
    assert json.loads(create[3]) == {"title": "tïtle"}
    assert create[3] == '{"title":"tïtle"}'.encode()
    assert delete[:2] == ("DELETE", "/oc/session/ses%2F2?directory=%2Fw")
