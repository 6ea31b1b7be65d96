"""The security suite's fixtures: a private Redis for the package, a hostile stack per module.

Redis is our own (started by devstack on a free port), so an attack on the
broker, or a flush between modules, can never touch anyone else's. Postgres is the
test database (``database_url``). After every test the stack must still serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.security.harness import Hostile

SECURITY_REDIS_DB = 5  # of the session's own Redis: this suite's broker alone


@contextmanager
def hostile_stack(
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    name: str = "hostile",
    redis_db: int = SECURITY_REDIS_DB,
    env: dict[str, str] | None = None,
) -> Iterator[Hostile]:
    """A hostile stack started with ``env`` over its defaults, on ``redis_db`` of the
    session's own Redis, stopped on the way out."""
    root = tmp_path_factory.mktemp(name)
    root.chmod(0o755)  # a sandbox's unprivileged uid must reach the worktrees
    stack = Hostile(
        root=root,
        database_url=database_url,
        redis_url=f"{redis_url.rpartition('/')[0]}/{redis_db}",
    )
    stack.stack.env.update(env or {})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def hostile(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    with hostile_stack(database_url, redis_url, tmp_path_factory) as stack:
        yield stack


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever the attack did, the API answers /healthz 200 afterwards."""
    yield
    if "hostile" in request.fixturenames:
        stack: Hostile = request.getfixturevalue("hostile")
        assert stack.healthz() == 200, "the API stopped serving after the attack"
        assert stack.worker.alive(), f"the worker died:\n{stack.worker.log_tail()}"
