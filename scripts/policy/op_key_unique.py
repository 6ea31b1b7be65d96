#!/usr/bin/env python3
"""Gate (d): the migrated schema has ``UNIQUE (op_key)`` on ``app.opencode_calls``.

The seed's §9: "If you see two rows for one op_key, the DB constraint is broken."
The check runs on a scratch database (created, then dropped) on the Postgres server
of ``--database-url`` (default: KODO_TEST_DATABASE_URL, else DATABASE_URL), built from
``--target``: the repository (``alembic upgrade head`` with its alembic.ini) or a
fixture holding a ``schema.sql``. It passes only when ``pg_constraint`` holds a
unique (or primary key) constraint on exactly the column ``op_key``: a composite
key such as ``(run_id, op_key)`` would let one call be paid twice. Exit 0 present,
1 absent or unprovable (server unreachable, migration failed): fail closed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import make_url

REPO = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/kodo"

QUERY = """
SELECT c.conname, c.contype
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'app' AND t.relname = 'opencode_calls' AND c.contype IN ('u', 'p')
  AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
       FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum = ANY(c.conkey))
      = ARRAY['op_key']
"""


def _conninfo(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


def _build(target: Path, scratch_url: str, conninfo: str) -> None:
    schema = target / "schema.sql"
    if (target / "alembic.ini").is_file():
        from alembic import command
        from alembic.config import Config

        config = Config(str(target / "alembic.ini"))
        config.set_main_option("script_location", str(target / "migrations"))
        config.set_main_option("sqlalchemy.url", scratch_url.replace("%", "%%"))
        command.upgrade(config, "head")
    elif schema.is_file():
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(schema.read_text().encode())  # a fixture file of this repository
    else:
        raise FileNotFoundError(f"{target} has neither alembic.ini nor schema.sql")


def check(target: Path, url: str) -> tuple[bool, str]:
    scratch = f"kodo_policy_opkey_{os.getpid()}"
    admin = _conninfo(url, "postgres")
    scratch_url = make_url(url).set(database=scratch).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        _build(target, scratch_url, _conninfo(url, scratch))
        with psycopg.connect(_conninfo(url, scratch), connect_timeout=5) as conn:
            rows = conn.execute(QUERY).fetchall()
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )
    if rows:
        return True, f"constraint {rows[0][0]} on app.opencode_calls(op_key)"
    return False, "no UNIQUE (op_key) constraint on app.opencode_calls"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=REPO, help="repository or fixture root")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("KODO_TEST_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_URL,
        help="any database on the Postgres server to use (a scratch database is made beside it)",
    )
    args = parser.parse_args(argv)
    try:
        ok, detail = check(args.target.resolve(), args.database_url)
    except Exception as exc:  # any failure to prove the constraint fails closed
        print(f"op_key_unique: FAIL: cannot prove it ({type(exc).__name__}: {exc})")
        return 1
    print(f"op_key_unique: {'ok' if ok else 'FAIL'}: {detail} ({args.target})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
