"""A step's git time spent by its deliveries that parked on a sent call.

A provider step's first delivery does its git work (CompileST makes the worktree,
ApplyPatchST resets it, DecideST reads the diffstat), sends the prompt and parks; the
delivery the collector's wake-up sends records the outcome. ``git_ms`` in the step's
output counted only that last delivery's git, so SQL told a worktree's checkout as the
orchestrator's time. ``parked_work_ms`` keeps what each parked delivery measured; the
recording delivery adds it to its own (``git_ms`` is then the step's whole git time).

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "step_runs",
        sa.Column("parked_work_ms", sa.Integer(), nullable=False, server_default="0"),
        schema="app",
    )


def downgrade() -> None:
    op.drop_column("step_runs", "parked_work_ms", schema="app")
