"""``kodo doctor`` finds the ledger's unknown calls by index, however long the ledger is.

Its "unknown calls" check (``TriageRepo.unknown_calls_by_run``) read the whole ledger to
find the few calls whose outcome is unknown: a sequential scan of ``opencode_calls``,
159 ms at 100,000 calls here and growing with every call a deployment ever made (about
1.6 s at a million). ``ix_opencode_calls_unknown`` holds only those rows (normally none),
keyed by run as the check groups them; its predicate names no bound value, so the
generic plan uses it too.

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_opencode_calls_unknown",
        "opencode_calls",
        ["run_id"],
        schema="app",
        postgresql_where=sa.text("status = 'unknown'"),
    )


def downgrade() -> None:
    op.drop_index("ix_opencode_calls_unknown", table_name="opencode_calls", schema="app")
