"""A cleanup that failed is recorded on the run and retried later, never first again.

The reconciler removes finished runs' worktrees, twenty at a time, oldest first. A
cleanup that keeps failing (a worktree outside this deployment's workspaces, a tree
the worker cannot remove) stayed the oldest due, so twenty of them starved every newer
cleanup for good. ``cleanup_failed_at`` and ``cleanup_error`` say why a worktree stays
(SQL-first triage); a failed cleanup waits ``CLEANUP_RETRY_S`` and goes after the
others.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("cleanup_failed_at", sa.DateTime(timezone=True)), schema="app")
    op.add_column("runs", sa.Column("cleanup_error", sa.Text()), schema="app")


def downgrade() -> None:
    op.drop_column("runs", "cleanup_error", schema="app")
    op.drop_column("runs", "cleanup_failed_at", schema="app")
