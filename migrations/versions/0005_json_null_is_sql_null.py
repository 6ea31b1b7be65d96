"""An absent JSON value is SQL NULL, not the JSON literal ``null``.

Until now a Python ``None`` written to a JSONB column (a failed call's response or
usage, a step without output) was stored as JSON ``null``, so the triage query
``WHERE response IS NULL`` missed those rows. The models now write SQL NULL; this
turns the rows already written into what they meant.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NULLABLE_JSON = {
    "opencode_calls": ("response", "usage"),
    "step_runs": ("output",),
}


def upgrade() -> None:
    for table, columns in NULLABLE_JSON.items():
        for column in columns:
            op.execute(
                f"UPDATE app.{table} SET {column} = NULL WHERE {column} = 'null'::jsonb"  # noqa: S608 - fixed names
            )


def downgrade() -> None:
    """Nothing to undo: SQL NULL reads back as None exactly as JSON null did."""
