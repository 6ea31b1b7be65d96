"""Request changes: a plan may have revisions, and a step may run in rounds.

``app.step_runs`` gains ``round`` (1 for a step's first run), ``attempt_base`` (the
ledger attempt its round's first call follows: each round's calls get new attempt
numbers, hence new op_keys) and ``round_input`` (what the round was asked: for
CompileST's round N, the reviewer's comment and the plan it revises; stored before the
step is sent, so every delivery builds the same prompt).

``app.step_rounds`` keeps every ended round of a step as its checkpoint last stood
(deliveries, attempt base, input, output, error), copied when the next round starts:
each plan revision's CompileST, each retried step, for triage (``retry_count`` stays
the sum of what the rounds and the ledger show, see README "Triage is SQL-first").

``app.plan_approvals.decision`` gains ``changes_requested`` (and room for it): the
approver's request for changes is a decision on one exact plan digest, like an approval.

Downgrade refuses while any plan has changes requested (their runs would read wrong),
and drops the round history.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_DECISION = "ck_plan_approvals_decision"


def upgrade() -> None:
    op.add_column(
        "step_runs",
        sa.Column("round", sa.Integer(), nullable=False, server_default="1"),
        schema="app",
    )
    op.add_column(
        "step_runs",
        sa.Column("attempt_base", sa.Integer(), nullable=False, server_default="0"),
        schema="app",
    )
    op.add_column(
        "step_runs",
        sa.Column("round_input", sa.dialects.postgresql.JSONB()),
        schema="app",
    )
    op.create_check_constraint(
        op.f("ck_step_runs_round"), "step_runs", '"round" >= 1 AND attempt_base >= 0', schema="app"
    )
    op.create_table(
        "step_rounds",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey(
                "app.runs.id", ondelete="CASCADE", name=op.f("fk_step_rounds_run_id_runs")
            ),
            nullable=False,
        ),
        sa.Column("step_id", sa.String(32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("attempt_base", sa.Integer(), nullable=False),
        sa.Column("round_input", sa.dialects.postgresql.JSONB()),
        sa.Column("output", sa.dialects.postgresql.JSONB()),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Integer()),
        sa.UniqueConstraint(
            "run_id", "step_id", "round", name=op.f("uq_step_rounds_run_id_step_id_round")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_rounds")),
        schema="app",
    )
    op.create_index(op.f("ix_step_rounds_run_id"), "step_rounds", ["run_id"], schema="app")
    op.alter_column(
        "plan_approvals", "decision", type_=sa.String(32), existing_nullable=False, schema="app"
    )
    op.drop_constraint(op.f(_DECISION), "plan_approvals", schema="app", type_="check")
    op.create_check_constraint(
        op.f(_DECISION),
        "plan_approvals",
        "decision IN ('approved', 'rejected', 'changes_requested')",
        schema="app",
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM app.plan_approvals WHERE decision = 'changes_requested') THEN
            RAISE EXCEPTION 'plans with changes requested exist: downgrade would misread them';
          END IF;
        END $$
        """
    )
    op.drop_constraint(op.f(_DECISION), "plan_approvals", schema="app", type_="check")
    op.create_check_constraint(
        op.f(_DECISION), "plan_approvals", "decision IN ('approved', 'rejected')", schema="app"
    )
    op.alter_column(
        "plan_approvals", "decision", type_=sa.String(16), existing_nullable=False, schema="app"
    )
    op.drop_table("step_rounds", schema="app")
    op.drop_constraint(op.f("ck_step_runs_round"), "step_runs", schema="app", type_="check")
    op.drop_column("step_runs", "round_input", schema="app")
    op.drop_column("step_runs", "attempt_base", schema="app")
    op.drop_column("step_runs", "round", schema="app")
