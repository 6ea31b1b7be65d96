"""Beat's passes go to ``kodo.housekeeping``, steps stay on ``kodo``, and the worker
kodo starts (named ``kodo@%h``) consumes both.

The real broker (its own Redis db) and a real worker process on the test database.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.utils.saferepr import saferepr
from redis import Redis

from devstack.kodo_procs import KODO_NODE, Stack, start_worker, wait_worker_ready
from shared.config import Settings
from shared.domain.run_machine import StepId
from shared.queue import (
    HOUSEKEEPING_QUEUE,
    QUEUE,
    RECONCILE,
    WATCH_APPROVALS,
    make_celery,
    send_step,
)

pytestmark = pytest.mark.integration

HOUSEKEEPING_REDIS_DB = 6


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    url = f"{redis_url.rpartition('/')[0]}/{HOUSEKEEPING_REDIS_DB}"
    client = Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def celery(broker_url: str, database_url: str) -> Iterator[Celery]:
    app = make_celery(Settings(database_url=database_url, redis_url=broker_url))
    yield app
    app.close()


def lengths(broker_url: str) -> dict[str, int]:
    client = Redis.from_url(broker_url)
    try:
        return {queue: int(client.llen(queue)) for queue in (QUEUE, HOUSEKEEPING_QUEUE)}
    finally:
        client.close()


def test_beats_passes_are_routed_to_housekeeping_and_steps_to_kodo(
    celery: Celery, broker_url: str
) -> None:
    celery.send_task(WATCH_APPROVALS)
    celery.send_task(RECONCILE)
    send_step(celery, StepId.COMPILE, "run-1")

    assert lengths(broker_url) == {QUEUE: 1, HOUSEKEEPING_QUEUE: 2}


def test_a_step_message_shows_its_run_id_as_celery_itself_would(
    celery: Celery, broker_url: str
) -> None:
    """Flower and ``celery inspect`` show a task's arguments from its ``argsrepr``
    header: kodo writes it itself, the same text Celery's saferepr would."""
    run_id = "0d3c1b2e-1111-2222-3333-444455556666"
    send_step(celery, StepId.COMPILE, run_id)
    client = Redis.from_url(broker_url)
    try:
        (raw,) = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    headers = json.loads(raw)["headers"]
    assert headers["argsrepr"] == saferepr([run_id], 1024) == f"['{run_id}']"
    assert headers["kwargsrepr"] == saferepr({}, 1024)
    assert (headers["task"], headers["root_id"]) == ("kodo.CompileST", run_id)


def test_the_worker_kodo_starts_is_kodo_at_host_and_drains_both_queues(
    celery: Celery, broker_url: str, database_url: str, tmp_path: Path
) -> None:
    celery.send_task(RECONCILE)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": broker_url}
    stack = Stack(env=env, log_dir=tmp_path / "logs")
    try:
        wait_worker_ready(start_worker(stack, concurrency=1, node=KODO_NODE))

        (reply,) = celery.control.ping(timeout=5)
        (node,) = reply
        assert node.startswith("kodo@")
        queues = celery.control.inspect(destination=[node], timeout=5).active_queues()
        assert sorted(q["name"] for q in queues[node]) == [QUEUE, HOUSEKEEPING_QUEUE]
        deadline = time.monotonic() + 30
        while lengths(broker_url)[HOUSEKEEPING_QUEUE] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lengths(broker_url) == {QUEUE: 0, HOUSEKEEPING_QUEUE: 0}
    finally:
        stack.stop()
