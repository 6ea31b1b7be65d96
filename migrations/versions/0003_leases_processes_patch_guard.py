"""Step leases with fencing tokens, the process registry, and the approval guard.

- ``step_runs.fence`` counts deliveries that entered the step; a worker may record
  its outcome only while its fence is current, so a late, presumed-dead worker can
  never overwrite its successor. ``lease_expires_at`` tells the reconciler when a
  running step is presumed dead.
- ``processes``: every API/worker/beat process records its app version and the
  migration head it was built for.
- The database refuses a succeeded ApplyPatchST without an approval of the run's
  current plan digest: no code change is recorded without the gate.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "step_runs",
        sa.Column("fence", sa.Integer(), server_default="1", nullable=False),
        schema="app",
    )
    op.add_column("step_runs", sa.Column("lease_owner", sa.String(length=255)), schema="app")
    op.add_column(
        "step_runs", sa.Column("lease_expires_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.add_column("step_runs", sa.Column("app_version", sa.String(length=64)), schema="app")
    op.create_table(
        "processes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.Column("migration_head", sa.String(length=64), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('api', 'worker', 'beat', 'cli')", name=op.f("ck_processes_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
        schema="app",
    )
    op.execute(
        """
        CREATE FUNCTION app.require_approved_patch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.step_id = 'ApplyPatchST' AND NEW.status = 'succeeded' AND NOT EXISTS (
            SELECT 1 FROM app.runs r JOIN app.plan_approvals a
              ON a.run_id = r.id AND a.plan_sha256 = r.plan_sha256
            WHERE r.id = NEW.run_id AND a.decision = 'approved' AND a.approved_at IS NOT NULL
              AND a.approved_at <= coalesce(NEW.started_at, now())
          ) THEN
            RAISE EXCEPTION 'applied patch without an approval of the current plan (run %)',
              NEW.run_id USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER step_runs_require_approved_patch
        BEFORE INSERT OR UPDATE OF status ON app.step_runs
        FOR EACH ROW EXECUTE FUNCTION app.require_approved_patch()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS step_runs_require_approved_patch ON app.step_runs")
    op.execute("DROP FUNCTION IF EXISTS app.require_approved_patch()")
    op.drop_table("processes", schema="app")
    for column in ("app_version", "lease_expires_at", "lease_owner", "fence"):
        op.drop_column("step_runs", column, schema="app")
