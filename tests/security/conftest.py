"""The security suite's fixtures: a private Redis for the package, a hostile stack shared
by its modules (or one of a module's own).

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


SHARED_REDIS_DB = 3  # of the session's own Redis: the shared stack's broker alone
OWN_STACK = frozenset(
    {
        # 40 intents in a burst exhaust the rate limit; whole logs are read; slow sockets
        "test_approval_and_display",
        # the worker's memory high-water mark, read from a fresh worker
        "test_base_checkout_bounds",
        "test_resource_bounds",
        # whole logs are read
        "test_review_display",
        # the keyring, the token rows, the broker's keys, every process the attacks left
        "test_sandbox",
        # attacks whose outside changes are compared with a snapshot
        "test_patch_effects",
    }
)
"""Modules whose ``hostile`` is a stack of their own, started for them: what they assert
reads state of the whole stack (its logs, its worker's memory, its rows and keys). Every
other module's ``hostile`` is the package's one stack (:func:`shared_hostile`), handed
on as a fresh one would be (:meth:`Hostile.begin_module`, :meth:`Hostile.end_module`):
a stack's start and stop cost 10-15 s, most modules' tests a few."""


@pytest.fixture(scope="package")
def shared_hostile(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    with hostile_stack(
        database_url, redis_url, tmp_path_factory, name="hostile-shared", redis_db=SHARED_REDIS_DB
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def hostile(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hostile]:
    if request.module.__name__.rpartition(".")[2] in OWN_STACK:
        with hostile_stack(database_url, redis_url, tmp_path_factory) as own:
            yield own
        return
    shared: Hostile = request.getfixturevalue("shared_hostile")
    shared.begin_module()
    yield shared
    shared.end_module()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever the attack did, the API answers /healthz 200 afterwards."""
    yield
    if "hostile" in request.fixturenames:
        stack: Hostile = request.getfixturevalue("hostile")
        assert stack.healthz() == 200, "the API stopped serving after the attack"
        assert stack.worker.alive(), f"the worker died:\n{stack.worker.log_tail()}"
