"""The ``kodo`` command: one click group; subcommands live beside their services."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: durable, approval-gated runs of AI coding agents."""


# Subcommand registration (one line each; keep this block at the bottom).
from devstack.commands import COMMANDS  # noqa: E402

for command in COMMANDS:
    cli.add_command(command)
from services.cli.demo import demo  # noqa: E402

cli.add_command(demo)
from services.cli.local import down, up  # noqa: E402

cli.add_command(up)
cli.add_command(down)
from services.cli.doctor import doctor  # noqa: E402

cli.add_command(doctor)
from services.cli.runs import calls, intent, run  # noqa: E402

cli.add_command(intent)
cli.add_command(run)
cli.add_command(calls)
from services.cli.db import db  # noqa: E402

cli.add_command(db)
from services.cli.tokens import token  # noqa: E402

cli.add_command(token)
