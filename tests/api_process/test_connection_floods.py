"""Attacks on the API's connection slots, no token needed, against a real API process
(gunicorn, the deployed worker class) with few slots (``KODO_API_CONNECTIONS=40``).

A keep-alive drip: many connections, each sending a small request before the header
deadline ends it, and reconnecting at once when closed. Each connection is idle nearly
all the time, but it held its slot for as long as the drip went on: new connections,
``/healthz`` included, waited in the listen backlog for good.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kodo_procs import Stack
from tests.api_process.conftest import api_process

SLOTS = 40


@pytest.fixture(scope="module")
def few_slots(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("floods")
    settings = {"KODO_API_CONNECTIONS": str(SLOTS), "KODO_API_WORKERS": "1"}
    with api_process(root, database_url, redis_url, **settings) as stack:
        yield stack


def _address(stack: Stack) -> tuple[str, int]:
    host, _, port = stack.api_url.removeprefix("http://").partition(":")
    return host, int(port)


def _answered(sock: socket.socket) -> bool:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        head += chunk
    return True


def _healthz_s(stack: Stack, timeout_s: float) -> float | None:
    """Seconds until ``/healthz`` answers on a new connection; None: not within timeout_s."""
    began = time.monotonic()
    try:
        with socket.create_connection(_address(stack), timeout=timeout_s) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kodo\r\nConnection: close\r\n\r\n")
            return time.monotonic() - began if _answered(sock) else None
    except OSError:
        return None


def test_a_keep_alive_drip_on_every_slot_leaves_room_for_new_connections(
    few_slots: Stack,
) -> None:
    stop = threading.Event()
    reconnects = [0]

    def drip() -> None:
        sock: socket.socket | None = None
        while not stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(_address(few_slots), timeout=5)
                sock.sendall(b"HEAD /openapi.json HTTP/1.1\r\nHost: kodo\r\n\r\n")
                if not _answered(sock):
                    raise ConnectionError("closed")
            except OSError:
                if sock is not None:
                    sock.close()
                sock, reconnects[0] = None, reconnects[0] + 1
                continue
            stop.wait(1.5)  # within the header deadline: no deadline ever ends it
        if sock is not None:
            sock.close()

    drippers = [threading.Thread(target=drip, daemon=True) for _ in range(2 * SLOTS)]
    for dripper in drippers:
        dripper.start()
    try:
        time.sleep(3)
        took = [_healthz_s(few_slots, timeout_s=10) for _ in range(5)]
        print(f"\n/healthz during the drip: {took}, drip reconnects {reconnects[0]}")
        assert all(t is not None for t in took), took
        assert reconnects[0] > 0, "the drip's idle connections were closed to make room"
        log = Path(few_slots.proc("api").log_path).read_text()
        assert "api.idle_connections_closed" in log
        assert "Traceback" not in log, "each closed as a hang-up, quietly"
    finally:
        stop.set()
        for dripper in drippers:
            dripper.join(10)
