"""What kodo reads every few seconds stays small however long the history grows.

A helper audited every periodic and per-run statement on a database of 200,000 finished
runs (700k steps, 770k ledger calls): two periodic ones read a whole table.

* The reconciler's cleanup (``due_cleanups``, every KODO_RECONCILE_S) seq-scanned runs
  for finished runs whose worktree is left: 21k buffers and ~50 ms per tick at that
  size, growing with every run. ``ix_runs_cleanup_due`` holds only runs with a worktree
  not yet removed (in flight or awaiting cleanup), in the query's order; its predicate
  names no bound value, so the generic plan uses it too: 1 buffer, 0.02 ms.
* Beat's liveness stamp (every 5 s) seq-scanned ``processes``, one row per process
  start ever: ``ix_processes_identity`` finds its own row.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_runs_cleanup_due",
        "runs",
        [sa.text("cleanup_failed_at NULLS FIRST"), "finished_at"],
        schema="app",
        postgresql_where=sa.text("worktree_removed_at IS NULL AND worktree_path IS NOT NULL"),
    )
    op.create_index("ix_processes_identity", "processes", ["kind", "hostname", "pid"], schema="app")


def downgrade() -> None:
    op.drop_index("ix_processes_identity", table_name="processes", schema="app")
    op.drop_index("ix_runs_cleanup_due", table_name="runs", schema="app")
