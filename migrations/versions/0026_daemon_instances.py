"""A run's worktree held open on a daemon: ``runs.instances_opened_at``.

opencode serve opens an "instance" for every directory a request names and keeps it
(about 60 MB and thousands of memory mappings per worktree with 1.18.33) after the
sessions are deleted: a daemon that served fifty runs had used most of the kernel's
65,530 mappings. The claim of a call stamps the column (if empty) in the statement
that already updates the run; once the run rests (waits for a person, is parked, or
ended) the reconciler disposes the instances of its worktree on each daemon its calls
since that stamp went to, and empties it; a release a daemon did not answer is stamped
``instances_release_failed_at`` and tried again later, after the others.
``ix_runs_instances_open`` holds only runs with something open.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("instances_opened_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.add_column(
        "runs", sa.Column("instances_release_failed_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.create_index(
        "ix_runs_instances_open",
        "runs",
        ["updated_at"],
        schema="app",
        postgresql_where=sa.text("instances_opened_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_instances_open", table_name="runs", schema="app")
    op.drop_column("runs", "instances_release_failed_at", schema="app")
    op.drop_column("runs", "instances_opened_at", schema="app")
