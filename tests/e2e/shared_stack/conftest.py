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

from collections.abc import Iterator

import pytest

from devstack.kodo_procs import Stack
from tests.e2e.conftest import e2e_stack


@pytest.fixture(scope="package")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    extra = {
        "KODO_SCHEMA_RETRIES": "3",
        # A succeeded run is pushed to its repository's "origin" (test_delivery.py gives
        # its repository one; elsewhere the failed push is only recorded).
        "KODO_DELIVER_REMOTE": "origin",
    }
    with e2e_stack(database_url, redis_url, tmp_path_factory.mktemp("e2e"), extra) as s:
        yield s
