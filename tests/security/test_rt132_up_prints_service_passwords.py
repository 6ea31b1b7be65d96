"""Red-team helper-132: ``kodo up`` prints DATABASE_URL and REDIS_URL with their passwords.

helper-131's fix redacted the Redis URL in ``kodo doctor`` and ``kodo db reset``. ``kodo
up`` reuses a Postgres or Redis that answers at the configured URL (``kind='reused'``,
``url`` the configured one, credentials and all) and then prints, for each,
``ready postgres reused postgresql://kodo:PASSWORD@db/kodo`` and ``migrations:
postgresql://kodo:PASSWORD@db/kodo at head`` (services/cli/local.py ``up``); ``kodo
down`` prints ``stopped {handle.url}`` and ``kodo demo`` ``handle.describe()`` the
same way. That terminal output is what people paste into issues and CI logs.

``devstack.up`` is replaced by one returning the handles it returns for reused
services, and the command is stopped right after those lines (at the sandbox check),
so nothing is started.

Safe outcome: both URLs are shown with their passwords redacted.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from devstack.handle import ServiceHandle
from devstack.stack import Stack
from services.cli import local
from services.cli.main import cli

pytestmark = pytest.mark.security

DB_SECRET = "rt132-pg-s3cret-pass"  # noqa: S105 - made up, to look for
REDIS_SECRET = "rt132-redis-s3cret-pass"  # noqa: S105
DATABASE_URL = f"postgresql+psycopg://kodo:{DB_SECRET}@127.0.0.1:1/kodo"
REDIS_URL = f"redis://:{REDIS_SECRET}@127.0.0.1:1/0"


def test_kodo_up_never_prints_the_service_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reused(database_url: str, redis_url: str, *, home: Path | None = None) -> Stack:
        return Stack(
            ServiceHandle("postgres", "reused", database_url, database_url),
            ServiceHandle("redis", "reused", redis_url, redis_url),
            False,
        )

    def stop_here(*_: object, **__: object) -> None:
        raise click.ClickException("stopped by the spec before anything is started")

    monkeypatch.setattr(local.devstack, "up", reused)
    monkeypatch.setattr(local, "_say_sandbox", stop_here)
    env = {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "KODO_HOME": str(tmp_path)}

    result = CliRunner().invoke(cli, ["up", "--home", str(tmp_path)], env=env)

    assert "stopped by the spec" in result.output, result.output  # the lines were printed
    assert DB_SECRET not in result.output, f"kodo up prints: {result.output!r}"
    assert REDIS_SECRET not in result.output, f"kodo up prints: {result.output!r}"
