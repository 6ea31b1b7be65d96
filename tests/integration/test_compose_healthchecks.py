"""The compose healthchecks (docker/healthcheck.py), run as a container runs them, each
against the real thing it proves: an HTTP server, a Celery worker and beat on the real
broker and database (beat's stamps in app.processes), and an open TCP stream; each
failure names its reason."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import Engine, text

from devstack.kodo_procs import Stack, start_beat, start_worker, wait_worker_ready

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
HEALTHCHECK_REDIS_DB = 7


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(b"opencode:pw").decode()
        if self.path == "/ok":
            status = 200
        elif self.path == "/auth":
            status = 200 if self.headers.get("Authorization") == expected else 401
        else:
            status = 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_is_healthy_on_200_and_names_any_other_answer(server: str) -> None:
    ok = healthcheck("http", f"{server}/ok")
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{server}/ok answered 200")

    bad = healthcheck("http", f"{server}/down")
    assert (bad.returncode, bad.stderr.strip()) == (1, f"unhealthy: {server}/down answered 503")


def test_http_sends_the_daemons_basic_auth_only_when_asked(server: str) -> None:
    env = {"OC_USERNAME": "opencode", "OC_PASSWORD": "pw"}
    assert healthcheck("http", f"{server}/auth", "--oc-auth", env=env).returncode == 0
    without = healthcheck("http", f"{server}/auth", env=env)
    assert (without.returncode, without.stderr.strip()) == (
        1,
        f"unhealthy: {server}/auth answered 401",
    )


def test_http_refuses_nothing_listening_and_other_schemes() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        closed = healthcheck("--timeout", "2", "http", f"http://127.0.0.1:{port}/healthz")
    assert closed.returncode == 1
    assert closed.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz did not answer")

    other = healthcheck("http", "file:///etc/passwd")
    assert (other.returncode, other.stderr.strip()) == (
        1,
        "unhealthy: not an http(s) URL: file:///etc/passwd",
    )


def test_stream_needs_an_open_connection_to_every_daemon() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as daemon,
        socket.create_server(("127.0.0.1", 0)) as other,
    ):
        first = f"http://127.0.0.1:{daemon.getsockname()[1]}"
        second = f"http://127.0.0.1:{other.getsockname()[1]}"
        with socket.create_connection(daemon.getsockname()[:2]) as stream:
            accepted, _ = daemon.accept()
            with accepted:
                followed = healthcheck("stream", env={"OC_BASE_URL": first})
                assert (followed.returncode, followed.stdout.strip()) == (0, f"following {first}")

                both = healthcheck("stream", env={"OC_BASE_URL": f"{first},{second}"})
                assert (both.returncode, both.stderr.strip()) == (
                    1,
                    f"unhealthy: no open event stream to {second}",
                )
            stream.close()
        gone = healthcheck("stream", env={"OC_BASE_URL": first})
        assert (gone.returncode, gone.stderr.strip()) == (
            1,
            f"unhealthy: no open event stream to {first}",
        )


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    url = f"{redis_url.rpartition('/')[0]}/{HEALTHCHECK_REDIS_DB}"
    client = Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def test_worker_is_healthy_only_when_a_worker_on_this_host_answers(
    broker_url: str, database_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": broker_url}
    alone = healthcheck("--timeout", "2", "worker", env=env)
    assert alone.returncode == 1
    assert alone.stderr.strip() == (
        f"unhealthy: no worker on {socket.gethostname()} answered a ping (answered: none)"
    )

    stack = Stack(
        env={**os.environ, "DATABASE_URL": database_url, "REDIS_URL": broker_url},
        log_dir=tmp_path / "logs",
    )
    try:
        wait_worker_ready(start_worker(stack, concurrency=1, node="anyname@%h"))
        alive = healthcheck("worker", env=env)
        assert (alive.returncode, alive.stdout.strip()) == (
            0,
            f"anyname@{socket.gethostname()} answered a ping",
        )
    finally:
        stack.stop()


def test_beat_is_healthy_while_beat_on_this_host_stamps_its_ticks(
    broker_url: str, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url}
    host = socket.gethostname()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM app.processes WHERE kind = 'beat'"))
    never = healthcheck("beat", "--max-age", "30", env=env)
    assert (never.returncode, never.stderr.strip()) == (
        1,
        f"unhealthy: no beat on {host} has ticked",
    )

    stack = Stack(
        env={**os.environ, "DATABASE_URL": database_url, "REDIS_URL": broker_url},
        log_dir=tmp_path,
    )
    try:
        beat = start_beat(stack)
        deadline = time.monotonic() + 60
        while (ticking := healthcheck("beat", "--max-age", "30", env=env)).returncode != 0:
            assert beat.alive(), beat.log_tail()
            assert time.monotonic() < deadline, f"{ticking.stderr}\n{beat.log_tail()}"
            time.sleep(0.5)
        assert ticking.stdout.startswith(f"beat on {host} ticked ")
    finally:
        stack.stop()

    with engine.begin() as conn:  # as a beat that stopped ten minutes ago left it
        conn.execute(
            text(
                "UPDATE app.processes SET last_seen_at = now() - interval '600 seconds'"
                " WHERE kind = 'beat'"
            )
        )
    stale = healthcheck("beat", "--max-age", "30", env=env)
    assert stale.returncode == 1
    said = re.search(
        rf"unhealthy: beat on {re.escape(host)} last ticked (\d+) s ago \(more than 30 s\)",
        stale.stderr,
    )
    assert said is not None, stale.stderr
    assert 600 <= int(said.group(1)) < 660  # the seconds since the UPDATE are added
