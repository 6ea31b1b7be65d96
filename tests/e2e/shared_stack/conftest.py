"""One whole local kodo for every module here: real oc-compat server, worker, beat,
collector and API processes, started once for the package.

A stack costs seconds of CPU to start and stop (10 s idle, 20-30 s under a loaded test
run); these modules drive it only through the API and read the database by their own
run ids, so none needs one of its own. tests/conftest.py gives the package one xdist
group, so its modules run in a row on one worker and the stack is stopped when the
last of them ends. A module that sets the processes up differently (its own env, its
own worker) lives beside this package and starts its own ``stack``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from devstack.kodo_procs import (
    Stack,
    ready_worker,
    start_api,
    start_beat,
    start_collector,
    start_oc_compat,
    start_together,
    start_worker,
)
from tests.e2e.conftest import E2E_REDIS_DB, _with_db


@pytest.fixture(scope="package")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    broker = _with_db(redis_url, E2E_REDIS_DB)
    redis.Redis.from_url(broker).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "KODO_REPO_ROOTS": str(root / "repos"),
        "KODO_WORKSPACE_DIR": str(root / "workspaces"),
        "RANDOM_SEED": "7",
        "APPROVAL_POLL_S": "0.5",
        "OC_TIMEOUT_MS": "20000",
        "KODO_SCHEMA_RETRIES": "3",
        # A succeeded run is pushed to its repository's "origin" (test_delivery.py gives
        # its repository one; elsewhere the failed push is only recorded).
        "KODO_DELIVER_REMOTE": "origin",
    }
    s = Stack(env=env, log_dir=root / "logs")
    try:
        start_oc_compat(s, seed=7)
        start_together(
            {
                "worker": lambda: ready_worker(start_worker(s)),
                "beat": lambda: start_beat(s),
                "collector": lambda: start_collector(s),
                "api": lambda: start_api(s),
            }
        )
        yield s
    finally:
        s.stop()
