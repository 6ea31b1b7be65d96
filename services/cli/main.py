"""The ``kodo`` command: one click group whose subcommands are imported when used.

Importing every subcommand up front cost each invocation most of a second (flask,
sqlalchemy, celery, httpx and marshmallow, through the API client and the local
runtime), ``kodo --help`` included. Each subcommand is therefore named here with its
one-line help and loaded by a function that imports its module only when it runs;
the imports stay plain ``from ... import`` statements so the import contracts see them.
``tests/unit/cli/test_lazy_commands.py`` holds the help lines to the commands' own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import click


def _devstack(name: str) -> click.Command:
    from devstack.commands import COMMANDS

    return {command.name: command for command in COMMANDS}[name]


def _demo() -> click.Command:
    from services.cli.demo import demo

    return demo


def _up() -> click.Command:
    from services.cli.local import up

    return up


def _down() -> click.Command:
    from services.cli.local import down

    return down


def _doctor() -> click.Command:
    from services.cli.doctor import doctor

    return doctor


def _intent() -> click.Command:
    from services.cli.runs import intent

    return intent


def _run() -> click.Command:
    from services.cli.runs import run

    return run


def _calls() -> click.Command:
    from services.cli.runs import calls

    return calls


def _db() -> click.Command:
    from services.cli.db import db

    return db


def _token() -> click.Command:
    from services.cli.tokens import token

    return token


def _webhook() -> click.Command:
    from services.cli.webhooks import webhook

    return webhook


@dataclass(frozen=True)
class Lazy:
    """A subcommand as ``kodo --help`` lists it, and how to import it when it runs."""

    help: str
    load: Callable[[], click.Command]


COMMANDS: dict[str, Lazy] = {
    "calls": Lazy(
        "The run's provider ledger: step, agent, attempt, status, duration, tokens, cost,"
        " and why each failed call failed; then the total.",
        _calls,
    ),
    "db": Lazy(
        "Migrate or reset the database named by DATABASE_URL (or the one `kodo up` used).", _db
    ),
    "demo": Lazy("Run one intent end to end: plan, approval, edits, verification, triage.", _demo),
    "doctor": Lazy(
        "Check Postgres, Redis, migrations, OpenCode, the API, workers, beat, stuck runs,"
        " unknown calls, runs waiting for an upgrade, table statistics and the sandbox.",
        _doctor,
    ),
    "down": Lazy(
        "Stop exactly what `kodo up` recorded (and Postgres/Redis only if it started them).",
        _down,
    ),
    "intent": Lazy("Submit a goal against a git repository.", _intent),
    "oc": Lazy(
        "The real OpenCode daemon (opencode serve 1.18.33): install, up, down, health.",
        lambda: _devstack("oc"),
    ),
    "oc-compat": Lazy(
        "Serve OpenCode's HTTP API with a deterministic scripted model (for demos and tests).",
        lambda: _devstack("oc-compat"),
    ),
    "run": Lazy("Start, inspect, watch and decide on runs (a run's id is its intent's id).", _run),
    "stack": Lazy(
        "Find-or-start Postgres and Redis for the demo, the tests and CI.",
        lambda: _devstack("stack"),
    ),
    "token": Lazy("Create, revoke and list API bearer tokens.", _token),
    "up": Lazy(
        "Start Postgres/Redis (found or started), migrations, OpenCode, worker, beat, API, Flower.",
        _up,
    ),
    "webhook": Lazy(
        "Webhook deliveries and every attempt at them; send a signed sample to the URL.",
        _webhook,
    ),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand only when it is invoked (or its help asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        return lazy.load() if lazy is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the help lines above: listing imports nothing."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, click.Command(name, help=COMMANDS[name].help).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: durable, approval-gated runs of AI coding agents."""
