"""Ledger v2 (error name, call start time) and run state-change notifications.

Every change of a run's status or step is announced on the ``kodo_run_events``
channel (LISTEN/NOTIFY), so clients can wait without polling. The payload is small
JSON: run id, status, last step.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "opencode_calls", sa.Column("error_name", sa.String(length=64), nullable=True), schema="app"
    )
    op.add_column(
        "opencode_calls",
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        schema="app",
    )
    op.execute(
        """
        CREATE FUNCTION app.notify_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('kodo_run_events', json_build_object(
            'run_id', NEW.id, 'status', NEW.status, 'last_step', NEW.last_step)::text);
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER runs_notify_event
        AFTER INSERT OR UPDATE OF status, last_step ON app.runs
        FOR EACH ROW EXECUTE FUNCTION app.notify_run_event()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS runs_notify_event ON app.runs")
    op.execute("DROP FUNCTION IF EXISTS app.notify_run_event()")
    op.drop_column("opencode_calls", "started_at", schema="app")
    op.drop_column("opencode_calls", "error_name", schema="app")
