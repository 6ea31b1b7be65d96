"""Transport failures: unreachable daemons, slow answers and bodies that are not JSON."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
