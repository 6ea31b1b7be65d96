"""A paid answer kodo did not use says why: ``opencode_calls.rejected``.

The build agent edits the worktree with its tools, so an attempt's answer is judged
against what the call left on disk, which the next attempt resets. A redelivered step
must reach the same verdict on a replayed attempt (its reason is quoted in the next
attempt's prompt, hence in that attempt's op_key), so the verdict is recorded on the
row, not recomputed. Only a ``succeeded`` row can be rejected.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("opencode_calls", sa.Column("rejected", sa.Text()), schema="app")
    op.create_check_constraint(
        op.f("ck_opencode_calls_rejected_only_succeeded"),
        "opencode_calls",
        "rejected IS NULL OR status = 'succeeded'",
        schema="app",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_opencode_calls_rejected_only_succeeded"),
        "opencode_calls",
        schema="app",
        type_="check",
    )
    op.drop_column("opencode_calls", "rejected", schema="app")
