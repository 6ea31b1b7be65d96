"""The daemon client's connections: kept alive, never reused when they cannot be trusted.

Each test runs a real HTTP/1.1 server on loopback that counts the connections it
accepted and can misbehave (close idle connections, cut a body short, answer garbage),
and drives it through :class:`OpenCodeClient`, the code path steps use.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import (
    OpenCodeTimeout,
    OpenCodeTransientError,
    OpenCodeUnreachable,
)
from shared.opencode.messages import AnswerTooLarge
from shared.opencode.transport import WATCH_S, ConnectionPool, Unreachable
from tests.served import served


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.posts = 0
        self.lock = threading.Lock()
        self.mode = "ok"
        self.open_sockets: list[socket.socket] = []

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        with self.lock:
            self.connections += 1
            self.open_sockets.append(sock)
        return sock, address

    def handle_error(self, request: object, client_address: object) -> None:
        return None  # a client that gave up (a timeout test) broke the pipe: expected

    def close_idle(self) -> None:
        """Close every connection from the server's side (as an idle timeout would)."""
        with self.lock:
            sockets, self.open_sockets = self.open_sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Counting
    bodies: ClassVar[dict[str, bytes]] = {"ok": b"true"}

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _answer(self, body: bytes, *, close: bool = False, declared: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if declared is None else declared))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:
        mode = self.server.mode
        if mode == "close":
            self._answer(b"true", close=True)
        elif mode == "short":
            self._answer(b"[1,2", declared=100)
            self.close_connection = True
        elif mode == "chunked_short":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"4\r\n[1,2\r\n")  # and no last chunk: the connection ends
            self.wfile.flush()
            self.close_connection = True
        elif mode == "garbage":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.close_connection = True
        elif mode == "big":
            self._answer(b"[" + b"1," * 100 + b"1]")  # past the cap, inside one socket read
        elif mode == "slow":
            time.sleep(1.0)
            self._answer(b"true")
        elif mode == "continues":  # interim answers without end, each within a read timeout
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            self.close_connection = True
        elif mode == "trickle":  # a byte of the body per 0.1 s, each within a read timeout
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            self.close_connection = True
        else:
            self._answer(b"true")

    def do_DELETE(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        with self.server.lock:
            self.server.posts += 1
        self._answer(b"true")


@pytest.fixture
def server() -> Iterator[_Counting]:
    with served(_Counting()) as srv:
        yield srv


def _client(srv: _Counting, *, timeout_s: float = 5.0, cap: int = 1 << 20) -> OpenCodeClient:
    return OpenCodeClient(
        f"http://127.0.0.1:{srv.server_address[1]}", timeout_s=timeout_s, max_answer_bytes=cap
    )


def test_sequential_requests_share_one_kept_alive_connection(server: _Counting) -> None:
    with _client(server) as client:
        for _ in range(20):
            assert client.delete_session("ses_1", directory="/w") is True
    assert server.connections == 1


def test_a_connection_the_daemon_closed_while_idle_is_not_used_for_the_next_prompt(
    server: _Counting, tmp_path: Path
) -> None:
    with _client(server) as client:
        assert client.delete_session("ses_1", directory=str(tmp_path)) is True
        server.close_idle()
        time.sleep(0.1)  # the FIN reaches the client's socket
        # a POST on the closed connection would fail with the prompt perhaps sent: the
        # pool sees the socket read ready (end of stream) and opens a fresh one
        assert client._call("POST", "/session/ses_1/abort", directory=str(tmp_path)) is True
    assert server.posts == 1
    assert server.connections == 2


def test_an_answer_that_says_close_is_not_reused(server: _Counting) -> None:
    server.mode = "close"
    with _client(server) as client:
        for _ in range(3):
            assert client.delete_session("ses_1", directory="/w") is True
    assert server.connections == 3


@pytest.mark.parametrize("mode", ["short", "chunked_short"])
def test_a_body_cut_short_is_a_transient_error_and_the_next_request_gets_a_fresh_connection(
    server: _Counting, mode: str
) -> None:
    server.mode = mode
    with _client(server) as client:
        with pytest.raises(OpenCodeTransientError, match="IncompleteRead"):
            client.delete_session("ses_1", directory="/w")
        server.mode = "ok"
        assert client.delete_session("ses_1", directory="/w") is True
    assert server.connections == 2


def test_an_answer_that_is_not_http_is_a_transient_error(server: _Counting) -> None:
    server.mode = "garbage"
    with _client(server) as client, pytest.raises(OpenCodeTransientError):
        client.delete_session("ses_1", directory="/w")


def test_a_body_left_unread_past_the_cap_closes_its_connection(server: _Counting) -> None:
    server.mode = "big"
    with _client(server, cap=100) as client:
        with pytest.raises(AnswerTooLarge):
            client._call("GET", "/session/ses_1/message", directory="/w")
        server.mode = "ok"
        # the rest of the big body is never read as the next answer's start
        assert client.delete_session("ses_1", directory="/w") is True
    assert server.connections == 2


def test_a_slow_answer_times_out_and_its_connection_is_not_reused(server: _Counting) -> None:
    server.mode = "slow"
    with _client(server, timeout_s=0.3) as client:
        with pytest.raises(OpenCodeTimeout):
            client.delete_session("ses_1", directory="/w")
        server.mode = "ok"
        assert client.delete_session("ses_1", directory="/w") is True
    assert server.connections == 2


@pytest.mark.parametrize("mode", ["continues", "trickle"])
def test_an_answer_that_never_ends_is_cut_at_the_requests_timeout(
    server: _Counting, mode: str
) -> None:
    """Each read comes within the read timeout, the answer never completes: 100 Continue
    after 100 Continue (http.client skips them without end), or a byte of the body at a
    time. The exchange as a whole is bounded, not each read."""
    server.mode = mode
    with _client(server, timeout_s=1.0) as client:
        began = time.monotonic()
        with pytest.raises(OpenCodeTimeout, match="no whole answer"):
            client.delete_session("ses_1", directory="/w")
        took = time.monotonic() - began
        server.mode = "ok"
        assert client.delete_session("ses_1", directory="/w") is True
    assert 1.0 <= took < 1.0 + 2 * WATCH_S + 1.0, took
    assert server.connections == 2, "the cut connection was not reused"


def test_threads_share_the_pool_and_each_request_holds_its_connection_alone(
    server: _Counting,
) -> None:
    server.mode = "slow"  # one second each: every thread needs a connection of its own
    with _client(server) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.delete_session("s", directory="/w"), range(8)))
        assert answers == [True] * 8
        assert server.connections == 8
        server.mode = "ok"
        list(pool.map(lambda _: client.delete_session("s", directory="/w"), range(40)))
    assert server.connections <= 8


def test_no_free_connection_within_the_timeout_is_unreachable_and_nothing_is_sent(
    server: _Counting,
) -> None:
    pool = ConnectionPool("http", "127.0.0.1", server.server_address[1], max_open=1)
    server.mode = "slow"
    port = server.server_address[1]
    headers = [("Host", f"127.0.0.1:{port}"), ("Content-Length", "0")]

    def hold() -> None:
        with pool.request("GET", "/x", headers, None, connect_s=1, read_s=5) as answer:
            list(answer.chunks())

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    with (
        pytest.raises(Unreachable, match="no free connection"),
        pool.request("POST", "/x", headers, b"", connect_s=1, read_s=0.2),
    ):
        pass
    holder.join()
    assert server.posts == 0
    pool.close()


def test_an_idle_connection_past_its_expiry_is_closed_not_reused(server: _Counting) -> None:
    port = server.server_address[1]
    pool = ConnectionPool("http", "127.0.0.1", port, idle_s=0.2)
    headers = [("Host", f"127.0.0.1:{port}")]
    for _ in range(2):
        with pool.request("GET", "/x", headers, None, connect_s=1, read_s=5) as answer:
            assert b"".join(answer.chunks()) == b"true"
        time.sleep(0.3)
    assert server.connections == 2
    assert pool.opened == 2
    pool.close()


def test_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        OpenCodeClient(f"http://127.0.0.1:{port}", timeout_s=2) as client,
        pytest.raises(OpenCodeUnreachable, match="ConnectionRefused"),
    ):
        client.delete_session("ses_1", directory="/w")
