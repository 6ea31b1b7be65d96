"""Webhooks: an outbox of run events to announce, and every attempt at sending one.

``app.webhook_deliveries`` is the outbox: a row per run event (``waiting_input``,
``succeeded``, ``failed``, ``budget``), inserted in the transaction that moved the run,
its id the stable delivery id receivers dedupe on. ``app.webhook_attempts`` keeps each
try (status code, error, duration, the next attempt scheduled).

Revision ID: 0020
Revises: 0019

(Renumbered from 0019 by the coordinator: 0019 is run_event_sequence, already on main.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_EVENTS = "event IN ('waiting_input', 'succeeded', 'failed', 'budget')"
_STATUSES = "status IN ('pending', 'delivered', 'failed', 'skipped')"
_OUTCOMES = "outcome IN ('delivered', 'retry', 'gave_up')"


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(_EVENTS, name=op.f("ck_webhook_deliveries_event")),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_webhook_deliveries_status")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts")),
        sa.CheckConstraint(
            "(status = 'pending') = (next_attempt_at IS NOT NULL)",
            name=op.f("ck_webhook_deliveries_pending_is_due"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["app.runs.id"],
            name=op.f("fk_webhook_deliveries_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        schema="app",
    )
    op.create_index(
        op.f("ix_webhook_deliveries_run_id"), "webhook_deliveries", ["run_id"], schema="app"
    )
    op.create_index(
        op.f("ix_webhook_deliveries_due"),
        "webhook_deliveries",
        ["next_attempt_at"],
        schema="app",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(_OUTCOMES, name=op.f("ck_webhook_attempts_outcome")),
        sa.CheckConstraint(
            "attempt >= 1 AND duration_ms >= 0", name=op.f("ck_webhook_attempts_attempt")
        ),
        sa.CheckConstraint(
            "(outcome = 'retry') = (next_attempt_at IS NOT NULL)",
            name=op.f("ck_webhook_attempts_retry_is_scheduled"),
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["app.webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sa.UniqueConstraint(
            "delivery_id", "attempt", name=op.f("uq_webhook_attempts_delivery_id_attempt")
        ),
        schema="app",
    )
    op.create_index(
        op.f("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"], schema="app"
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts", schema="app")
    op.drop_table("webhook_deliveries", schema="app")
