"""The migration head this code was written for; a process refuses any other."""

from __future__ import annotations

from sqlalchemy import Engine, text

EXPECTED_HEAD = "0032"


class SchemaMismatch(RuntimeError):
    pass


def database_head(engine: Engine) -> str | None:
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('app.alembic_version')")).scalar()
        if exists is None:
            return None
        head = conn.execute(text("SELECT version_num FROM app.alembic_version")).scalar()
    return str(head) if head is not None else None


def assert_schema_current(engine: Engine) -> str:
    """Return the head, or refuse to run against a database migrated to another one."""
    head = database_head(engine)
    if head != EXPECTED_HEAD:
        raise SchemaMismatch(
            f"database migration head is {head or 'none (not migrated)'}, but this kodo "
            f"needs {EXPECTED_HEAD}: run `kodo stack migrate` (or alembic upgrade head) "
            "or deploy the matching version"
        )
    return head
