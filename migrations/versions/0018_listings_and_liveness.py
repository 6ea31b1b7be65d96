"""Run and intent listings, and process liveness.

``GET /runs`` and ``GET /intents`` page newest first by ``(created_at, id)`` (keyset,
never OFFSET), optionally by status: indexes so a page is a short index scan whatever
the table's size. ``app.processes`` gains ``last_seen_at``: long-lived processes (beat,
above all) stamp it as they work, so ``kodo doctor`` can tell a live scheduler from a
dead one from SQL alone.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_created", "runs", ["created_at", "id"], schema="app")
    op.create_index("ix_runs_status_created", "runs", ["status", "created_at", "id"], schema="app")
    op.create_index("ix_intents_created", "intents", ["created_at", "id"], schema="app")
    op.add_column("processes", sa.Column("last_seen_at", sa.DateTime(timezone=True)), schema="app")


def downgrade() -> None:
    op.drop_column("processes", "last_seen_at", schema="app")
    op.drop_index("ix_intents_created", "intents", schema="app")
    op.drop_index("ix_runs_status_created", "runs", schema="app")
    op.drop_index("ix_runs_created", "runs", schema="app")
