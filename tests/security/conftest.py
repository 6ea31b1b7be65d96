"""The security suite's fixtures: a private Redis for the package, a hostile stack per module.

Redis is our own (started by services.devstack on a free port), so an attack on the
broker, or a flush between modules, can never touch anyone else's. Postgres is the
test database (``database_url``). After every test the stack must still serve.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack import down, ensure_redis
from services.launcher import free_port
from tests.security.harness import Hostile


@pytest.fixture(scope="package")
def private_redis() -> Iterator[str]:
    home = Path(tempfile.mkdtemp(prefix="kodo-security-redis-"))
    try:
        handle = ensure_redis(f"redis://127.0.0.1:{free_port()}/0", home=home)
        assert handle.kind == "started", "the security suite needs a Redis of its own"
        yield handle.url
    finally:
        down(home=home, grace_s=5.0)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def hostile(
    database_url: str, private_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    root.chmod(0o755)  # a sandbox's unprivileged uid must reach the worktrees
    stack = Hostile(root=root, database_url=database_url, redis_url=private_redis)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever the attack did, the API answers /healthz 200 afterwards."""
    yield
    if "hostile" in request.fixturenames:
        stack: Hostile = request.getfixturevalue("hostile")
        assert stack.healthz() == 200, "the API stopped serving after the attack"
        assert stack.worker.alive(), f"the worker died:\n{stack.worker.log_tail()}"
