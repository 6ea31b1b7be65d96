"""Red-team attacks on the API in its deployed shape (gunicorn + gevent), each asserting
the safe outcome.

The API runs alone (no worker: a started run stays ``queued``, which is all an event
stream needs) on the test database and a Redis server of this module's own, so one
test may stop that server to see what the API does without it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from redis import Redis

from devstack.handle import ServiceHandle
from devstack.kodo_procs import Stack, issue_token, start_api
from devstack.sample_repo import create_sample_repo
from devstack.stack import stopped
from tests.conftest import own_redis
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

PER_TOKEN = 3


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceHandle, Path]]:
    """A Redis of this module's own: a test stops it mid-run."""
    with own_redis("kodo-attack-redis-") as handle_and_home:
        yield handle_and_home


@pytest.fixture(scope="module")
def stack(
    database_url: str, own: tuple[ServiceHandle, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("attacks")
    redis = own[0]
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "KODO_REPO_ROOTS": str(root / "repos"),
        "KODO_WORKSPACE_DIR": str(root / "workspaces"),
        "KODO_SSE_PER_TOKEN": str(PER_TOKEN),
        "KODO_INTENT_RATE": "100/minute",
    }
    s = Stack(env=env, log_dir=root / "logs")
    try:
        start_api(s)
        yield s
    finally:
        s.stop()


def bearer(stack: Stack, role: str = "admin") -> str:
    return issue_token(stack.env["DATABASE_URL"], f"attack-{uuid.uuid4().hex[:10]}", role)


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    )


def address(stack: Stack) -> tuple[str, int]:
    host, _, port = stack.api_url.removeprefix("http://").partition(":")
    return host, int(port)


def raw(
    stack: Stack, request: bytes, *, wait_for: bytes = b"\r\n\r\n"
) -> tuple[socket.socket, bytes]:
    """Send ``request`` on a fresh socket; return it and what came back up to ``wait_for``."""
    sock = socket.create_connection(address(stack), timeout=10)
    sock.sendall(request)
    got = b""
    while wait_for not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return sock, got


@pytest.fixture(scope="module")
def queued_run(stack: Stack) -> str:
    """A started run no worker takes: it stays ``queued``, so its stream stays open."""
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "queued")
    with client(stack, bearer(stack)) as http:
        made = http.post("/intents", json={"repo": str(repo), "goal": "Add a docstring"})
        assert made.status_code == 201, made.text
        started = http.post(f"/intents/{made.json()['intentId']}/run")
        assert started.status_code == 202, started.text
        run_id: str = started.json()["runId"]
    return run_id


def stream_status(
    stack: Stack, token: str, run_id: str, method: str = "GET"
) -> tuple[socket.socket, int]:
    sock, head = raw(
        stack,
        f"{method} /runs/{run_id}/events HTTP/1.1\r\nHost: kodo\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode(),
    )
    return sock, int(head.split(b" ", 2)[1]) if head else 0


def streams_held(own: tuple[ServiceHandle, Path], name: str) -> int:
    """Event-stream slots the API holds in its Redis right now for the token ``name``."""
    client = Redis.from_url(own[0].url)
    try:
        keys = client.scan_iter(match=f"*:sse:token:{name}")
        return sum(int(client.zcard(key)) for key in keys)
    finally:
        client.close()


def test_head_requests_on_an_event_stream_cannot_lock_a_token_out_of_its_streams(
    stack: Stack, queued_run: str, own: tuple[ServiceHandle, Path]
) -> None:
    """Attack: gunicorn writes no body for HEAD, so a HEAD stream never noticed its client
    had gone and kept its slot (refreshed) until the run ended; a few HEADs, then close."""
    name = f"attack-{uuid.uuid4().hex[:10]}"
    token = issue_token(stack.env["DATABASE_URL"], name, "approver")
    for _ in range(PER_TOKEN * 2):
        sock, status = stream_status(stack, token, queued_run, "HEAD")
        sock.close()
        assert status == 200
    wait_until(lambda: streams_held(own, name) == 0, 5, "the API to hold no slot of the token")
    with ExitStack() as held:
        opened = []
        for _ in range(PER_TOKEN):
            sock, status = stream_status(stack, token, queued_run)
            held.callback(sock.close)
            opened.append(status)
    assert opened == [200] * PER_TOKEN, "HEAD requests left slots behind"


def test_oversize_and_too_many_headers_are_refused_before_the_app(stack: Stack) -> None:
    """Attack: a 64 KB header, 200 headers, an 8 KB request line: 400/431, never a 500
    or a hang, and /healthz keeps answering."""
    big_header = b"GET /healthz HTTP/1.1\r\nHost: kodo\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    many = (
        b"GET /healthz HTTP/1.1\r\nHost: kodo\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        + b"\r\n"
    )
    long_line = b"GET /healthz?" + b"q" * 8192 + b" HTTP/1.1\r\nHost: kodo\r\n\r\n"
    for request in (big_header, many, long_line):
        sock, head = raw(stack, request)
        sock.close()
        status = int(head.split(b" ", 2)[1]) if head else 0
        assert status in (400, 414, 431), head[:200]
    assert httpx.get(f"{stack.api_url}/healthz", timeout=5).status_code == 200


def test_the_api_fails_closed_while_redis_is_gone_and_healthz_says_so(
    stack: Stack, own: tuple[ServiceHandle, Path], queued_run: str
) -> None:
    """Attack: take Redis away (it holds the rate limits and stream slots). Intents and
    streams are refused (never admitted uncounted); /healthz answers fast, naming redis;
    reads that need no Redis go on; when Redis returns, so does everything."""
    token = bearer(stack)
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "noredis")
    body = {"repo": str(repo), "goal": "Add a docstring"}
    redis, redis_home = own
    with stopped(redis, home=redis_home, grace_s=5.0, timeout_s=20), client(stack, token) as http:
        began = time.monotonic()
        health = http.get("/healthz")
        health_s = time.monotonic() - began
        intent = http.post("/intents", json=body)
        stream = http.get(f"/runs/{queued_run}/events")
        read = http.get(f"/runs/{queued_run}")
    assert health.status_code == 503
    assert health.json()["failed"] == ["redis"]
    assert health_s < 5
    assert intent.status_code == 503, intent.text
    assert intent.json()["error"]["code"] == "rate_limits_unavailable"
    assert stream.status_code == 503
    assert stream.json()["error"]["code"] == "stream_limits_unavailable"
    assert read.status_code == 200
    with client(stack, token) as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/intents", json=body).status_code == 201
