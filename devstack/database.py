"""Databases on a server that answers: create if missing, recreate for CI, migrate to head."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql

from devstack import pgurl
from devstack.handle import DevstackError, repo_root

_PROTECTED = frozenset({"postgres", "template0", "template1"})


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if missing; True when it was created."""
    name = pgurl.database_of(url)
    with _maintenance(url) as conn:
        if _exists(conn, name):
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # a concurrent caller won the race; the DB exists, which is all we want
    return True


def recreate_database(url: str) -> None:
    """Drop (forcing other sessions off) and create the database: CI's fresh start."""
    name = pgurl.database_of(url)
    if name in _PROTECTED:
        raise DevstackError(f"refusing to drop the {name!r} database")
    with _maintenance(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def migrate(url: str, *, alembic_ini: Path | None = None) -> None:
    """``alembic upgrade head`` against ``url``, using the checkout's alembic.ini."""
    ini = alembic_ini or repo_root() / "alembic.ini"
    if not ini.is_file():
        raise DevstackError(f"no alembic.ini at {ini}; run from the repository checkout")
    config = Config(str(ini))
    # ConfigParser interpolates '%': escape it so URL-encoded passwords survive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def _maintenance(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(
            pgurl.conninfo(url, dbname=pgurl.MAINTENANCE_DB, timeout_s=5.0), autocommit=True
        )
    except psycopg.Error as exc:
        raise DevstackError(
            f"cannot log in to the {pgurl.MAINTENANCE_DB!r} database: {exc}"
        ) from exc


def _exists(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None
