"""`kodo --help` imports no subcommand: none of the heavy libraries is loaded by it.

Checked in a fresh interpreter (this test process has imported them all already), by
reading ``sys.modules`` after the help is printed, not by timing it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from services.cli.main import COMMANDS, cli

HEAVY = ("flask", "sqlalchemy", "celery", "httpx", "marshmallow", "redis", "rich")
PROBE = """
import json, sys
from services.cli.main import cli
try:
    cli([{args}])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def loaded_after(*args: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after ``kodo ARGS``."""
    code = PROBE.format(args=", ".join(repr(a) for a in args), heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_kodo_help_imports_none_of_the_heavy_libraries() -> None:
    assert loaded_after("--help") == []


def test_a_subcommand_imports_what_it_needs_when_it_runs() -> None:
    assert "httpx" in loaded_after("run", "--help"), "the probe does see an import"


DATABASE_SIDE = ("alembic", "sqlalchemy", "psycopg", "redis", "celery", "flask")


@pytest.mark.parametrize(
    "args", [("run", "list", "--api-url", "http://127.0.0.1:9"), ("intent", "--help")]
)
def test_commands_that_talk_to_the_api_load_nothing_of_the_database_side(
    args: tuple[str, ...],
) -> None:
    """They find a ``kodo up`` home through devstack.handle; the devstack package once
    imported alembic and SQLAlchemy with it (0.7 s before ``kodo run list`` did anything)."""
    code = PROBE.format(args=", ".join(repr(a) for a in args), heavy=DATABASE_SIDE)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_listed_help_line_is_the_commands_own(name: str) -> None:
    command = COMMANDS[name].load()

    assert command.name == name
    first_paragraph = (command.help or "").split("\n\n")[0]
    assert COMMANDS[name].help == " ".join(first_paragraph.split())


def test_kodo_help_lists_every_command_and_an_unknown_one_is_a_usage_error() -> None:
    runner = CliRunner()

    listed = runner.invoke(cli, ["--help"])
    unknown = runner.invoke(cli, ["no-such-command"])

    assert listed.exit_code == 0
    commands = listed.output.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in commands.splitlines() if line.strip()] == sorted(COMMANDS)
    assert unknown.exit_code == click.UsageError.exit_code
    assert "No such command 'no-such-command'" in unknown.output
