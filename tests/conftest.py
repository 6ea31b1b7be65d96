"""Shared fixtures: a real, migrated Postgres database and a real Redis.

``KODO_TEST_DATABASE_URL`` names the Postgres server and the stem of this session's
own database; Redis is a private server per session. Nothing here mocks a service.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from devstack.handle import ServiceHandle
from devstack.redis_server import ensure_redis
from devstack.stack import down
from devstack.supervisor import free_port
from shared.db.engine import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = [
    "tests.browser",  # browser and page fixtures (Debian Chromium)
    "tests.chaos.summary",  # the chaos table, printed where the session's results are
]
DEFAULT_TEST_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/kodo_test"
APP_TABLES = (
    "app.artifacts",
    "app.opencode_calls",
    "app.plan_approvals",
    "app.step_runs",
    "app.runs",
    "app.intents",
    "app.ui_sessions",
    "app.api_tokens",
    "app.metrics_rollup",
    "app.metrics_rollup_state",
)


HEAVIEST_FIRST = ("conformance", "chaos", "e2e", "security", "api_process", "integration", "unit")
"""The suites by their cost per file (real daemons and whole stacks first): under
pytest-xdist (``scripts/test``) a single long file handed out last, while the other
worker has nothing left, sets the run's end."""
ONE_WORKER = ("conformance", "chaos", "e2e/shared_stack")
"""Folders under tests/ whose fixtures are worth starting once: the conformance and chaos
suites' session fixtures (private Postgres and Redis to crash, the real daemon), and the
one stack of e2e/shared_stack's modules. Each runs whole on one xdist worker, its files
in a row. Every other file runs whole on one worker, as its module-scoped stack is
started once too."""


@pytest.hookimpl(tryfirst=True)  # before xdist's own reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files heaviest suite first, and give each test its xdist group (its
    ONE_WORKER folder, else its file): ``--dist loadgroup`` then hands out whole groups
    in this order."""

    def suite(item: pytest.Item) -> str:
        return item.path.relative_to(ROOT / "tests").parts[0]

    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}  # any other suite: last
    items.sort(key=lambda item: rank.get(suite(item), len(rank)))  # stable: files stay whole
    for item in items:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        group = next((f for f in ONE_WORKER if path.startswith(f"{f}/")), f"tests/{path}")
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist runs too
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Stop the run at once where xdist's loadgroup did not take the groups above.

    A worker says each test's group in the node id it reports (``path::test@group``).
    Where that stops working (pytest 9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386)
    nothing fails: each file's tests are merely spread over both workers, and every
    module stack starts twice.
    """
    ungrouped = [nodeid for nodeid in ids if "@" not in nodeid]
    if ungrouped and _dist_of(node) == "loadgroup":
        pytest.exit(
            f"--dist loadgroup did not group {len(ungrouped)} tests (first: {ungrouped[0]}):"
            " pytest and pytest-xdist disagree on node ids (pytest-dev/pytest-xdist#1386)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def _dist_of(node: object) -> str | None:
    """The controller's --dist (xdist hands its WorkerController, untyped, as ``node``)."""
    config = getattr(node, "config", None)
    dist = config.getoption("dist") if isinstance(config, pytest.Config) else None
    return dist if isinstance(dist, str) else None


def _admin(url: str) -> Engine:
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def scratch_database_url(database_url: str, purpose: str) -> str:
    """A database name of this test session's own, for a test that needs a second one."""
    parsed = make_url(database_url)
    return parsed.set(database=f"{parsed.database}_{purpose}").render_as_string(hide_password=False)


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this session alone, dropped at its end.

    Its name is ``KODO_TEST_DATABASE_URL``'s plus a random suffix, so two test runs on
    one machine (or one Postgres) never see each other's rows.
    """
    base = make_url(os.environ.get("KODO_TEST_DATABASE_URL", DEFAULT_TEST_DB))
    url = base.set(database=f"{base.database}_{secrets.token_hex(4)}")
    rendered = url.render_as_string(hide_password=False)
    admin = _admin(rendered)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    try:
        migrate(rendered)
        yield rendered
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def own_redis(prefix: str) -> Iterator[tuple[ServiceHandle, Path]]:
    """A redis-server of the caller's own on a free loopback port (nothing on disk), and
    its devstack home (to stop or restart it); stopped and removed at the end."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        handle = ensure_redis(f"redis://127.0.0.1:{free_port()}/0", home=home)
        if handle.kind != "started":  # pragma: no cover - a free port answered PING
            raise RuntimeError(f"expected a private Redis, got {handle.describe()}")
        yield handle, home
    finally:
        down(home=home, grace_s=5.0)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server of this session's own (free loopback port, nothing on disk).

    Suites use fixed DB numbers on it and FLUSHDB them; on a private server that
    touches no other test run's (or user's) data.
    """
    with own_redis("kodo-test-redis-") as (handle, _home):
        yield handle.url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on a database emptied before the test."""
    empty_app_tables(engine)
    return make_session_factory(engine)


def empty_app_tables(engine: Engine, tables: Sequence[str] = APP_TABLES) -> None:
    """TRUNCATE ``tables``, again if Postgres broke a deadlock by failing it.

    A module's API or worker process may still be reading (a UI page, a watcher's poll):
    the TRUNCATE takes its tables' locks one by one, a reader holding one of them while it
    waits for another deadlocks with it, and Postgres cancels one side, sometimes ours.
    No lock order avoids that for every reader's order, so the TRUNCATE is tried again.
    """
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as err:
            if attempt == 2 or not isinstance(err.orig, psycopg.errors.DeadlockDetected):
                raise


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One session for arranging and inspecting rows; factories write through it."""
    from tests import factories

    with sessions() as session:
        factories.bind(session)
        yield session
        session.rollback()
