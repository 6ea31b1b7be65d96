"""Run events are numbered: ``app.runs.event_seq``, so an SSE client can resume.

Every change of a run's public state (status, last step, next action) adds one to its
``event_seq``, counted by a BEFORE trigger (application code cannot move it: any other
UPDATE keeps it), and the notification carries it as ``seq``. ``GET /runs/{id}/events``
sends it as each frame's ``id:``; a client reconnecting with ``Last-Event-ID`` is sent
the run's state only if it changed since.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_COUNT = """
    CREATE OR REPLACE FUNCTION app.count_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.status IS DISTINCT FROM OLD.status
         OR NEW.last_step IS DISTINCT FROM OLD.last_step
         OR NEW.next_action IS DISTINCT FROM OLD.next_action THEN
        NEW.event_seq := OLD.event_seq + 1;
      ELSE
        NEW.event_seq := OLD.event_seq;
      END IF;
      RETURN NEW;
    END $$
    """


def _notify_function(fields: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION app.notify_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('kodo_run_events', json_build_object({fields})::text);
          RETURN NEW;
        END $$
        """


_FIELDS = (
    "'run_id', NEW.id, 'status', NEW.status, 'last_step', NEW.last_step,"
    " 'next_action', NEW.next_action"
)


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default="1"),
        schema="app",
    )
    op.execute(_COUNT)
    op.execute(
        "CREATE TRIGGER runs_count_event BEFORE UPDATE ON app.runs"
        " FOR EACH ROW EXECUTE FUNCTION app.count_run_event()"
    )
    op.execute(_notify_function(_FIELDS + ", 'seq', NEW.event_seq"))


def downgrade() -> None:
    op.execute(_notify_function(_FIELDS))
    op.execute("DROP TRIGGER runs_count_event ON app.runs")
    op.execute("DROP FUNCTION app.count_run_event()")
    op.drop_column("runs", "event_seq", schema="app")
