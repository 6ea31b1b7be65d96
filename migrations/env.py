"""Alembic environment: the URL comes from Settings, with lock and statement timeouts."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from shared.config import Settings
from shared.db.models import SCHEMA, Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_migrations_online() -> None:
    engine = create_engine(url)
    try:  # a migration that refuses (raises) must not leave its pooled connection open
        with engine.connect() as connection:
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text("SET statement_timeout = '60s'"))
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                version_table_schema=SCHEMA,
                include_schemas=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
