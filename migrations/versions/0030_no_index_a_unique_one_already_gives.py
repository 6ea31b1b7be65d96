"""Drop the run_id (and delivery_id) indexes a unique constraint's index already gives.

``app.step_runs``, ``step_rounds``, ``plan_approvals``, ``opencode_calls`` and
``artifacts`` each had an index on ``run_id`` beside a unique index that leads with
``run_id`` (``(run_id, step_id)``, ``(run_id, step_id, round)``, ``(run_id,
plan_sha256)``, ``(run_id, step_id, attempt)``, ``(run_id, step_id, name)``), and
``webhook_attempts`` one on ``delivery_id`` beside ``(delivery_id, attempt)``. A lookup
by the leading column alone, the cascade of a run's deletion included, is served by the
unique index; the single-column one only cost an entry on every insert and on every
update that was not HOT (the ledger's row is updated four times a call).

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

REDUNDANT = (
    ("ix_step_runs_run_id", "step_runs", "run_id"),
    ("ix_step_rounds_run_id", "step_rounds", "run_id"),
    ("ix_plan_approvals_run_id", "plan_approvals", "run_id"),
    ("ix_opencode_calls_run_id", "opencode_calls", "run_id"),
    ("ix_artifacts_run_id", "artifacts", "run_id"),
    ("ix_webhook_attempts_delivery_id", "webhook_attempts", "delivery_id"),
)


def upgrade() -> None:
    for name, table, _column in REDUNDANT:
        op.drop_index(name, table_name=table, schema="app")


def downgrade() -> None:
    for name, table, column in REDUNDANT:
        op.create_index(name, table, [column], schema="app")
