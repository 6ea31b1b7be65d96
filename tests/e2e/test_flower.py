"""Flower sees our worker and its readable task names, through Flower's own HTTP API,
and only for whoever holds its generated credentials.

A real worker and a real Flower (``celery -A services.worker.celery_app:app flower``)
on the real broker (Redis db 9) and the test database.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from devstack.kodo_procs import (
    FlowerAuth,
    Stack,
    flower_auth,
    start_flower,
    start_worker,
    wait_worker_ready,
)
from shared.config import Settings
from shared.queue import make_celery

pytestmark = pytest.mark.e2e

FLOWER_REDIS_DB = 9
TASKS = {
    "kodo.CompileST",
    "kodo.ApplyPatchST",
    "kodo.DecideST",
    "kodo.ExecuteST",
    "kodo.watch_approvals",
}


@pytest.fixture(scope="module")
def login(tmp_path_factory: pytest.TempPathFactory) -> FlowerAuth:
    return flower_auth(tmp_path_factory.mktemp("flower-home") / "flower.auth")


@pytest.fixture(scope="module")
def flower(
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    login: FlowerAuth,
) -> Iterator[Stack]:
    broker = f"{redis_url.rpartition('/')[0]}/{FLOWER_REDIS_DB}"
    client = Redis.from_url(broker)
    client.flushdb()
    client.close()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "FLOWER_UNAUTHENTICATED_API": "true",  # an operator's leftover: must not open the API
    }
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("flower") / "logs")
    try:
        wait_worker_ready(start_worker(stack, name="flowerworker"))
        start_flower(stack, login)
        yield stack
    finally:
        stack.stop()


def workers_seen(stack: Stack, login: FlowerAuth, deadline_s: float = 30.0) -> dict[str, Any]:
    """``/api/workers?refresh=1`` until our worker answers (Flower asks over the broker)."""
    end = time.monotonic() + deadline_s
    body: dict[str, Any] = {}
    while time.monotonic() < end:
        reply = httpx.get(
            f"{stack.flower_url}/api/workers",
            params={"refresh": 1},
            auth=(login.user, login.password),
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        if any(name.startswith("flowerworker-") for name in body):
            return body
        time.sleep(0.5)
    pytest.fail(f"Flower never listed our worker: {body}\n{stack.proc('flower').log_tail()}")


def test_flower_lists_our_worker_and_the_kodo_task_names(flower: Stack, login: FlowerAuth) -> None:
    workers = workers_seen(flower, login)
    name, info = next((n, i) for n, i in workers.items() if n.startswith("flowerworker-"))
    registered = set(info.get("registered") or [])
    assert registered >= TASKS, f"{name} registered {sorted(registered)}"
    assert info["stats"]["pid"] == flower.proc("flowerworker").popen.pid


def test_flower_credentials_are_generated_once_and_kept_private(
    login: FlowerAuth, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.getbasetemp() / "again" / "flower.auth"
    first = flower_auth(path)
    assert flower_auth(path) == first, "a second `kodo up` reuses the stored credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.password) >= 24
    assert first != login, "each home gets its own password"


def test_without_credentials_flower_answers_401_and_the_worker_keeps_running(
    flower: Stack, login: FlowerAuth
) -> None:
    workers = workers_seen(flower, login)
    name = next(n for n in workers if n.startswith("flowerworker-"))
    base = flower.flower_url
    shutdown = httpx.post(f"{base}/api/worker/shutdown/{name}", timeout=10)
    wrong = httpx.post(
        f"{base}/api/worker/shutdown/{name}", auth=(login.user, "not-the-password"), timeout=10
    )
    listing = httpx.get(f"{base}/api/workers", timeout=10)
    page = httpx.get(f"{base}/", timeout=10)

    assert [shutdown.status_code, wrong.status_code, listing.status_code, page.status_code] == [
        401,
        401,
        401,
        401,
    ]
    # A worker takes control messages in order: answering a later ping, it got no shutdown.
    celery = make_celery(Settings.from_env(flower.env))
    try:
        answered = [node for reply in celery.control.ping(timeout=3.0) for node in reply]
    finally:
        celery.close()
    assert name in answered, f"{name} does not answer after the POSTs: {answered}"
    assert flower.proc("flowerworker").alive(), "an unauthenticated POST stopped the worker"
