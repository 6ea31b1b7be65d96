"""Daemon sessions kodo is done with but could not delete: ``app.sessions_to_forget``.

kodo deletes a call's session once its answer is recorded (the daemon keeps every
session in memory, about 10 MB each with 1.18.33), and a cancel deletes the sessions it
aborted. Each delete was tried once: one the daemon did not answer (restarting, a 5xx,
unreachable) left the session on the daemon for good. A failed delete now leaves a row
here (only then: the hot path writes nothing), and the reconciler tries again with a
growing pause until the daemon confirms it or says the session is gone.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions_to_forget",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("daemon", sa.Text()),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_error", sa.Text()),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_sessions_to_forget_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions_to_forget")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sessions_to_forget_session_id")),
        schema="app",
    )


def downgrade() -> None:
    op.drop_table("sessions_to_forget", schema="app")
