"""The approval gate compares times the database assigned, never a host's clock.

``app.require_approved_patch`` compared ``plan_approvals.approved_at`` (written from
the API host's clock) with ``step_runs.started_at`` (the worker host's clock): a worker
2 s behind had its approved patch refused, and every redelivery the same way. Both
times are now written by Postgres in the statement (``now()`` for the approval,
``clock_timestamp()`` when a delivery enters the step), so one clock decides.

The guard asks one question: is there an approval of the run's current digest, made
no later than the step row's database-assigned start? A row inserted already
succeeded (no step ever entered) is judged against the database's time now, not
against a ``started_at`` its writer chose.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_GUARD = """
CREATE OR REPLACE FUNCTION app.require_approved_patch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  entered_at timestamptz := CASE WHEN TG_OP = 'UPDATE' THEN OLD.started_at
                                 ELSE clock_timestamp() END;
BEGIN
  IF NEW.step_id = 'ApplyPatchST' AND NEW.status = 'succeeded' AND NOT EXISTS (
    SELECT 1 FROM app.runs r JOIN app.plan_approvals a
      ON a.run_id = r.id AND a.plan_sha256 = r.plan_sha256
    WHERE r.id = NEW.run_id AND a.decision = 'approved'
      AND a.approved_at <= entered_at
  ) THEN
    RAISE EXCEPTION 'applied patch without an approval of the current plan (run %)',
      NEW.run_id USING ERRCODE = 'check_violation',
      HINT = 'rule approval_gate: an approval of the run''s current plan digest must exist'
             ' and predate the step''s start (both times assigned by the database)';
  END IF;
  RETURN NEW;
END $$
"""

_GUARD_0003 = """
CREATE OR REPLACE FUNCTION app.require_approved_patch() RETURNS trigger LANGUAGE plpgsql AS $$
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


def upgrade() -> None:
    op.execute(_GUARD)


def downgrade() -> None:
    op.execute(_GUARD_0003)
