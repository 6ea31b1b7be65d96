"""Run events carry the whole public state of the run (status, step, next action).

With ``next_action`` in the payload, an SSE stream can forward each committed change
as it arrives instead of re-reading the row per notification (a read per event per
watcher); it still re-reads after a listener reconnect and on keepalive.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _notify_function(fields: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION app.notify_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('kodo_run_events', json_build_object({fields})::text);
          RETURN NEW;
        END $$
        """


def _trigger_on(columns: str) -> list[str]:
    return [
        "DROP TRIGGER IF EXISTS runs_notify_event ON app.runs",
        f"""
        CREATE TRIGGER runs_notify_event
        AFTER INSERT OR UPDATE OF {columns} ON app.runs
        FOR EACH ROW EXECUTE FUNCTION app.notify_run_event()
        """,
    ]


def upgrade() -> None:
    op.execute(
        _notify_function(
            "'run_id', NEW.id, 'status', NEW.status, 'last_step', NEW.last_step,"
            " 'next_action', NEW.next_action"
        )
    )
    for statement in _trigger_on("status, last_step, next_action"):
        op.execute(statement)


def downgrade() -> None:
    for statement in _trigger_on("status, last_step"):
        op.execute(statement)
    op.execute(
        _notify_function("'run_id', NEW.id, 'status', NEW.status, 'last_step', NEW.last_step")
    )
