"""A real local kodo per test module, started by ``kodo up`` (a subprocess), on Redis db 9.

The commands under test run in-process through click's CliRunner and find the API
through the state file ``kodo up`` wrote (``--home`` points at the module's own
directory). Nothing is mocked: real Postgres (the test database), real Redis, real
worker, beat, API, Flower and OpenCode-compatible server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from redis import Redis
from sqlalchemy import Engine

from devstack.sample_repo import create_sample_repo
from services.cli import upstate
from services.cli.main import cli
from tests.conftest import APP_TABLES, empty_app_tables

CLI_REDIS_DB = 9
KODO = Path(sys.executable).parent / "kodo"
RUN_TABLES = APP_TABLES[: APP_TABLES.index("app.intents") + 1]
"""Every run's rows and their intents; not the stack's token, which outlives a test."""


def with_db(redis_url: str, db: int) -> str:
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def cli_redis_url(redis_url: str) -> str:
    return with_db(redis_url, CLI_REDIS_DB)


def clean(engine: Engine, broker: str) -> None:
    """Empty the run tables and the broker db (ours alone: db 9)."""
    empty_app_tables(engine, RUN_TABLES)
    client = Redis.from_url(broker)
    client.flushdb()
    client.close()


@dataclass
class Kodo:
    """The CLI against one ``kodo up`` stack: ``kodo("run", "status", id)``."""

    home: Path
    env: dict[str, str | None]
    state: upstate.UpState
    up_output: str = ""
    """What ``kodo up`` printed (stdout, then stderr)."""

    def __call__(self, *args: str) -> Result:
        runner = CliRunner()
        return runner.invoke(cli, [*args], env=self.env, catch_exceptions=False)

    def token(self, name: str, role: str) -> str:
        """A token made the operator's way: `kodo token create NAME --role ROLE`."""
        self("token", "revoke", name)  # a name left by an earlier run of the suite
        made = self("token", "create", name, "--role", role, "--json")
        assert made.exit_code == 0, made.output
        token: str = json.loads(made.stdout)["token"]  # stderr carries the audit line
        return token

    @property
    def repo_root(self) -> Path:
        return self.home / "repos"

    def sample_repo(self, name: str) -> Path:
        return create_sample_repo(self.repo_root / name)


def cli_env(home: Path, database_url: str, broker: str) -> dict[str, str | None]:
    """The environment the commands see: test database and broker; URLs from up.json."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "KODO_HOME": str(home),
        "OC_BASE_URL": None,
        "KODO_API_URL": None,
        "KODO_API_TOKEN": None,
        "COLUMNS": "160",
    }


@pytest.fixture(scope="module")
def kodo(
    database_url: str,
    cli_redis_url: str,
    engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Kodo]:
    home = tmp_path_factory.mktemp("kodo-home")
    (home / "repos").mkdir()
    clean(engine, cli_redis_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": cli_redis_url,
        "APPROVAL_POLL_S": "0.5",
        "RANDOM_SEED": "7",
    }
    env.pop("OC_BASE_URL", None)
    argv = [str(KODO), "up", "--home", str(home), "--api-port", "0", "--oc-port", "0"]
    argv += ["--flower-port", "0", "--repo-root", str(home / "repos")]
    started = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = upstate.load(home)
        assert state is not None
        said = started.stdout + started.stderr
        yield Kodo(home, cli_env(home, database_url, cli_redis_url), state, said)
    finally:
        subprocess.run(
            [str(KODO), "down", "--home", str(home), "--grace", "5"],
            env=env,
            capture_output=True,
            timeout=120,
        )
