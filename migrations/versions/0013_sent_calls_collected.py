"""A provider call can be ``sent``: prompted with ``prompt_async``, its answer not yet
collected, no worker thread waiting on it.

``app.opencode_calls`` gains:

- status ``sent``: the daemon took the prompt (204); the step that sent it has parked
  and the collector (or the deadline sweep) wakes it when the session ends;
- ``idle_at``: when the collector saw the session end (``session.idle`` or
  ``session.error``, or found it idle on reconnect), by the database's clock; a step
  that parks after that moment sees it and wakes itself (no lost wake-up);
- ``daemon``: the base URL of the daemon that holds the call's session (several may
  serve one deployment), so the collector of that daemon finds it;
- a partial index on ``session_id`` of sent calls: the collector's lookup per event.

``app.processes.kind`` gains ``collector``: the collector records itself at start and
refuses a database of another head, as workers and beat do.

``app.step_runs`` gains ``parked_on``: the op_key of the sent call a step waits for,
its lease (owner ``parked``) lasting until the call's deadline. A wake-up resumes the
step under a new fence without counting a redelivery; the deadline sweep is the
reconciler's expired-lease sweep.

Downgrade: sent rows become ``unknown`` (their answers are never collected), as a
worker that stopped mid-call leaves them.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_CALL_STATUSES_0010 = (
    "claimed",
    "succeeded",
    "failed",
    "timed_out",
    "aborted",
    "unknown",
    "succeeded_late",
    "failed_late",
)
_CALL_STATUSES = (*_CALL_STATUSES_0010, "sent")
_UNKNOWN_ERROR = "claimed but never recorded: the calling worker stopped mid-call"


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _set_call_statuses(allowed: tuple[str, ...]) -> None:
    op.drop_constraint(
        op.f("ck_opencode_calls_status"), "opencode_calls", schema="app", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_opencode_calls_status"), "opencode_calls", _in("status", allowed), schema="app"
    )


_PROCESS_KINDS_0003 = ("api", "worker", "beat", "cli")


def _set_process_kinds(allowed: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_processes_kind"), "processes", schema="app", type_="check")
    op.create_check_constraint(
        op.f("ck_processes_kind"), "processes", _in("kind", allowed), schema="app"
    )


def upgrade() -> None:
    _set_call_statuses(_CALL_STATUSES)
    _set_process_kinds((*_PROCESS_KINDS_0003, "collector"))
    op.add_column("opencode_calls", sa.Column("idle_at", sa.DateTime(timezone=True)), schema="app")
    op.add_column("opencode_calls", sa.Column("daemon", sa.Text()), schema="app")
    op.add_column("step_runs", sa.Column("parked_on", sa.String(64)), schema="app")
    op.create_index(
        "ix_opencode_calls_sent_session",
        "opencode_calls",
        ["session_id"],
        schema="app",
        postgresql_where=sa.text("status = 'sent'"),
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM app.processes WHERE kind = 'collector'"))
    _set_process_kinds(_PROCESS_KINDS_0003)
    op.execute(
        sa.text(
            "UPDATE app.opencode_calls SET status = 'unknown', error_name = 'OutcomeUnknown',"
            " error = :error WHERE status = 'sent'"
        ).bindparams(error=_UNKNOWN_ERROR)
    )
    op.drop_index("ix_opencode_calls_sent_session", table_name="opencode_calls", schema="app")
    op.drop_column("step_runs", "parked_on", schema="app")
    op.drop_column("opencode_calls", "daemon", schema="app")
    op.drop_column("opencode_calls", "idle_at", schema="app")
    _set_call_statuses(_CALL_STATUSES_0010)
