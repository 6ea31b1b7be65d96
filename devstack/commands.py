"""The local runtime's commands (``stack``, ``oc``, ``oc-compat``), added to ``kodo`` by its CLI.

The CLI reaches the local runtime, and through it the model stand-ins, only here and in
the commands that start a local stack (``up``, ``down``, ``demo``, ``db``).
"""

from __future__ import annotations

import click

from devstack.cli import stack
from devstack.oc_daemon.cli import oc
from standins.oc_compat.cli import oc_compat

COMMANDS: tuple[click.Command, ...] = (stack, oc, oc_compat)
