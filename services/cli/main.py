"""The ``kodo`` command: one click group; subcommands live beside their services."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kodo")
def cli() -> None:
    """kodo: durable, approval-gated runs of AI coding agents."""


# Subcommand registration (one line each; keep this block at the bottom).
from services.devstack.cli import stack  # noqa: E402

cli.add_command(stack)
from services.oc_compat.cli import oc_compat  # noqa: E402

cli.add_command(oc_compat)
from services.cli.demo import demo  # noqa: E402

cli.add_command(demo)
