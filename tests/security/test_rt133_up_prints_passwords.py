"""Red-team helper-133: ``kodo up`` and ``kodo stack up`` print the database and broker
passwords.

kodo hides a URL's password wherever ``kodo doctor`` and ``kodo db`` name the database or
the broker (``render_as_string(hide_password=True)``; helper-131's spec for Redis). But
``kodo up`` says ``ready postgres reused postgresql+psycopg://kodo:PASSWORD@...`` and
``migrations: postgresql+psycopg://kodo:PASSWORD@... at head``, and the Redis line the
same; ``kodo stack up`` (and ``kodo demo``, through ``ServiceHandle.describe``) print
them too. That output is what people paste into issues and CI logs; the database
password is every run, token hash and ledger row.

The services are found by a stub here (what ``devstack.up`` hands back for servers that
answer: ``reused``, the URL as configured); everything printed is the real command's.

The safe outcome: no operator-facing command prints a URL's password (``--env``, whose
stdout is for ``eval``, excepted).
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from devstack import stack as devstack_stack
from devstack.handle import ServiceHandle
from services.cli import local
from services.cli.main import cli

pytestmark = pytest.mark.security

PG_SECRET = "rt133-pg-s3cret"  # noqa: S105 - made up, to look for
REDIS_SECRET = "rt133-redis-s3cret"  # noqa: S105 - made up, to look for
DATABASE_URL = f"postgresql+psycopg://kodo:{PG_SECRET}@db.example.invalid:5432/kodo"
REDIS_URL = f"redis://:{REDIS_SECRET}@broker.example.invalid:6379/0"


def _reused(*_args: object, **_kwargs: object) -> devstack_stack.Stack:
    return devstack_stack.Stack(
        postgres=ServiceHandle("postgres", "reused", DATABASE_URL, DATABASE_URL),
        redis=ServiceHandle("redis", "reused", REDIS_URL, REDIS_URL),
        database_created=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "KODO_HOME": str(tmp_path)}


def _assert_hidden(output: str) -> None:
    shown = [line for line in output.splitlines() if PG_SECRET in line or REDIS_SECRET in line]
    assert not shown, f"printed: {shown}"


def test_kodo_up_never_prints_a_password(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack_stack, "up", _reused)  # `kodo up` calls it as devstack.up

    def stop_here(*_args: object) -> None:
        raise click.ClickException("stopped by the spec after the services were found")

    monkeypatch.setattr(local, "_say_sandbox", stop_here)
    result = CliRunner().invoke(cli, ["up", "--home", str(tmp_path)], env=env)
    assert "stopped by the spec" in result.output
    _assert_hidden(result.output)


def test_kodo_stack_up_never_prints_a_password(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack_stack, "up", _reused)
    result = CliRunner().invoke(cli, ["stack", "up", "--home", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    _assert_hidden(result.output)
