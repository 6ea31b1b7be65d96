"""A real HTTP receiver on a loopback port, in a thread: it keeps every request it got
and answers what the test says (a status, a redirect, a slow answer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devstack.supervisor import free_port
from tests.served import served


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    """What the receiver answers each request with."""

    status: int = 204
    location: str | None = None
    delay_s: float = 0.0
    body: bytes = b""
    trickle_s: float = 0.0  # >0: the answer's head sent a byte at a time, this far apart


@dataclass
class Receiver:
    port: int
    answer: Answer = field(default_factory=Answer)
    got: list[Received] = field(default_factory=list)
    cut_off: list[int] = field(default_factory=list)  # bytes written before the client left

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/kodo"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.got.append(Received(self.path, dict(self.headers.items()), body))
            answer = receiver.answer
            if answer.delay_s:
                time.sleep(answer.delay_s)
            if answer.trickle_s:
                self._trickle(answer)
                return
            self.send_response(answer.status)
            if answer.location is not None:
                self.send_header("Location", answer.location)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            written = 0
            try:
                for start in range(0, len(answer.body), 65536):
                    written += self.wfile.write(answer.body[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                receiver.cut_off.append(written)

        def _trickle(self, answer: Answer) -> None:
            """Each byte of the status line and headers on its own, ``trickle_s`` apart:
            every read gets something well within any read timeout."""
            head = f"HTTP/1.1 {answer.status} OK\r\nContent-Length: 0\r\n\r\n".encode()
            written = 0
            try:
                for byte in head:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    written += 1
                    time.sleep(answer.trickle_s)
            except (BrokenPipeError, ConnectionResetError):
                receiver.cut_off.append(written)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` on its port until the block ends."""
    with served(ThreadingHTTPServer(("127.0.0.1", receiver.port), _handler(receiver))):
        yield receiver


def receiver_on_free_port() -> Receiver:
    """A receiver not serving yet (its port refuses connections until ``serving``)."""
    return Receiver(free_port())
