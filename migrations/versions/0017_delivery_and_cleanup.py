"""Delivery and cleanup: where a succeeded run's branch was pushed, and what was removed.

``app.runs`` gains ``delivered_sha``/``delivered_at`` (the commit pushed to the
repository's delivery remote), ``delivery_error`` and ``delivery_attempts`` (a push that
failed, retried by the reconciler a few times), and ``worktree_removed_at`` /
``branch_removed_at`` (the reconciler's cleanup of finished runs).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_STAMPS = ("delivered_at", "worktree_removed_at", "branch_removed_at")


def upgrade() -> None:
    op.add_column("runs", sa.Column("delivered_sha", sa.String(64)), schema="app")
    op.add_column("runs", sa.Column("delivery_error", sa.Text()), schema="app")
    op.add_column(
        "runs",
        sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0"),
        schema="app",
    )
    for name in _STAMPS:
        op.add_column("runs", sa.Column(name, sa.DateTime(timezone=True)), schema="app")


def downgrade() -> None:
    for name in (*_STAMPS, "delivery_attempts", "delivery_error", "delivered_sha"):
        op.drop_column("runs", name, schema="app")
