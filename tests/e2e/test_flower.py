"""Flower sees our worker and its readable task names, through Flower's own HTTP API.

A real worker and a real Flower (``celery -A services.worker.celery_app:app flower``)
on the real broker (Redis db 9) and the test database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from services.launcher import Stack, start_flower, start_worker, wait_worker_ready

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
def flower(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    broker = f"{redis_url.rpartition('/')[0]}/{FLOWER_REDIS_DB}"
    client = Redis.from_url(broker)
    client.flushdb()
    client.close()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": broker}
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("flower") / "logs")
    try:
        wait_worker_ready(start_worker(stack, name="flowerworker"))
        start_flower(stack, unauthenticated_api=True)
        yield stack
    finally:
        stack.stop()


def workers_seen(stack: Stack, deadline_s: float = 30.0) -> dict[str, Any]:
    """``/api/workers?refresh=1`` until our worker answers (Flower asks over the broker)."""
    end = time.monotonic() + deadline_s
    body: dict[str, Any] = {}
    while time.monotonic() < end:
        reply = httpx.get(f"{stack.flower_url}/api/workers", params={"refresh": 1}, timeout=10)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        if any(name.startswith("flowerworker-") for name in body):
            return body
        time.sleep(0.5)
    pytest.fail(f"Flower never listed our worker: {body}\n{stack.proc('flower').log_tail()}")


def test_flower_lists_our_worker_and_the_kodo_task_names(flower: Stack) -> None:
    workers = workers_seen(flower)
    name, info = next((n, i) for n, i in workers.items() if n.startswith("flowerworker-"))
    registered = set(info.get("registered") or [])
    assert registered >= TASKS, f"{name} registered {sorted(registered)}"
    assert info["stats"]["pid"] == flower.proc("flowerworker").popen.pid
