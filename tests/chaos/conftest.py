"""The chaos suite's fixtures: a private stack for the session, a baseline per scenario,
and each scenario's row of the summary table (printed by :mod:`tests.chaos.summary`).

Run it alone with ``scripts/test tests/chaos -m chaos``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from devstack.database import ensure_database, migrate
from devstack.postgres_server import ensure_postgres
from devstack.redis_server import ensure_redis
from devstack.stack import down
from devstack.supervisor import free_port
from tests.chaos.harness import TERMINAL, Chaos, Services
from tests.chaos.summary import ScenarioResult


@dataclass
class Scenario:
    """What one test did, for the summary table: its runs and a note (e.g. runs/s)."""

    name: str
    run_ids: list[str] = field(default_factory=list)
    note: str = ""

    def track(self, *run_ids: str) -> None:
        self.run_ids.extend(run_ids)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Postgres and Redis of our own on free ports: the suite may kill and restart them.

    The home lives in a world-traversable temp dir: as root, devstack runs Postgres as an
    unprivileged user, which must reach its data directory.
    """
    home = Path(tempfile.mkdtemp(prefix="kodo-chaos-"))
    home.chmod(0o755)
    pg_url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/kodo_chaos"
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        postgres = ensure_postgres(pg_url, home=home)
        broker = ensure_redis(redis_url, home=home)
        assert (postgres.kind, broker.kind) == ("started", "started"), "not private servers"
        ensure_database(postgres.url)
        migrate(postgres.url)
        yield Services(home=home, postgres=postgres, redis=broker)
    finally:
        down(home=home, grace_s=5.0)
        if not os.environ.get("KODO_CHAOS_KEEP"):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(services: Services) -> Iterator[Chaos]:
    chaos = Chaos(services, services.home / "kodo")
    try:
        chaos.baseline()
        yield chaos
    finally:
        chaos.close()


@pytest.fixture
def chaos(stack: Chaos) -> Chaos:
    """The stack, healthy again: whatever the previous scenario broke is restarted."""
    stack.baseline()
    return stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_OUTCOME] = report.outcome
    return report


_OUTCOME = pytest.StashKey[str]()


@pytest.fixture
def scenario(chaos: Chaos, request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """Times the test and records its row of the summary table (even when it fails)."""
    current = Scenario(name=request.node.name.removeprefix("test_"))
    started = time.monotonic()
    yield current
    seconds = time.monotonic() - started
    try:
        statuses = chaos.statuses(current.run_ids)
        lost = sum(1 for r in current.run_ids if statuses.get(r) not in TERMINAL)
        duplicated = chaos.duplicated_calls(current.run_ids)
    except DBAPIError:
        lost = duplicated = -1
    ScenarioResult(
        name=current.name,
        runs=len(current.run_ids),
        lost=lost,
        duplicated=duplicated,
        seconds=seconds,
        outcome=request.node.stash.get(_OUTCOME, "error"),
        note=current.note,
    ).attach(request.node)
