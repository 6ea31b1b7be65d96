"""A worker's database pool holds a connection for each step it runs at once, and two more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.worker import runtime


@pytest.fixture(autouse=True)
def _unplanned() -> Iterator[None]:
    saved = dict(runtime._planned)
    runtime._planned.clear()
    yield
    runtime._planned.clear()
    runtime._planned.update(saved)


def test_an_eight_thread_worker_keeps_ten_connections() -> None:
    """Eight steps and the lease renewer share it: with the old fixed 5, every transaction
    past the fifth opened a connection (a Postgres backend) and closed it again."""
    runtime.plan_pool_for(8)
    assert runtime.pool_size() == 10


def test_a_small_worker_keeps_the_default_and_an_unplanned_one_too() -> None:
    assert runtime.pool_size() == runtime.DEFAULT_POOL
    runtime.plan_pool_for(1)
    assert runtime.pool_size() == runtime.DEFAULT_POOL
