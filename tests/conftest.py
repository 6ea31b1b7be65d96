"""Shared fixtures: a real, migrated Postgres database and a real Redis.

``KODO_TEST_DATABASE_URL`` names the test database (created and migrated if
missing); ``REDIS_URL`` the Redis server. Nothing here mocks a service.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parent.parent
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
)


def _ensure_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("KODO_TEST_DATABASE_URL", DEFAULT_TEST_DB)
    _ensure_database(url)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on a database emptied before the test."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(APP_TABLES)} RESTART IDENTITY CASCADE"))
    return make_session_factory(engine)


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One session for arranging and inspecting rows; factories write through it."""
    from tests import factories

    with sessions() as session:
        factories.bind(session)
        yield session
        session.rollback()
