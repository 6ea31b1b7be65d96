"""Initial schema: intents, runs, step checkpoints, approvals, the op_key ledger, artifacts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.create_table(
        "intents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("repo_path", sa.Text(), nullable=False),
        sa.Column("goal", sa.Text(), nullable=False),
        sa.Column("base_ref", sa.String(length=255), nullable=False),
        sa.Column("submitted_by", sa.String(length=255), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intents")),
        schema="app",
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("last_step", sa.String(length=32), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("next_action", sa.String(length=64), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.Column("plan_sha256", sa.String(length=64), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("worktree_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "last_step IS NULL OR last_step IN ('CompileST', 'ApplyPatchST', 'DecideST', 'ExecuteST')",
            name=op.f("ck_runs_last_step"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'compiling', 'waiting_input', 'applying', 'deciding', 'executing', 'succeeded', 'failed', 'rejected', 'cancelled')",
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint("id = intent_id", name=op.f("ck_runs_workflow_id_is_intent_id")),
        sa.CheckConstraint("retry_count >= 0", name=op.f("ck_runs_retry_count")),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["app.intents.id"],
            name=op.f("fk_runs_intent_id_intents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("intent_id", name=op.f("uq_runs_intent_id")),
        schema="app",
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "sha256 = encode(sha256(content), 'hex')", name=op.f("ck_artifacts_sha256_matches")
        ),
        sa.CheckConstraint("size = octet_length(content)", name=op.f("ck_artifacts_size_matches")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["app.runs.id"], name=op.f("fk_artifacts_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint(
            "run_id", "step_id", "name", name=op.f("uq_artifacts_run_id_step_id_name")
        ),
        schema="app",
    )
    op.create_index(
        op.f("ix_artifacts_run_id"), "artifacts", ["run_id"], unique=False, schema="app"
    )
    op.create_table(
        "opencode_calls",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("op_key", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("usage", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('claimed', 'succeeded', 'failed', 'timed_out', 'aborted', 'unknown')",
            name=op.f("ck_opencode_calls_status"),
        ),
        sa.CheckConstraint(
            "step_id IN ('CompileST', 'ApplyPatchST', 'DecideST', 'ExecuteST')",
            name=op.f("ck_opencode_calls_step_id"),
        ),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_opencode_calls_attempt")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["app.runs.id"],
            name=op.f("fk_opencode_calls_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opencode_calls")),
        sa.UniqueConstraint("op_key", name=op.f("uq_opencode_calls_op_key")),
        schema="app",
    )
    op.create_index(
        op.f("ix_opencode_calls_run_id"), "opencode_calls", ["run_id"], unique=False, schema="app"
    )
    op.create_table(
        "plan_approvals",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("plan_sha256", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("approver", sa.String(length=255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(decision = 'approved') = (approved_at IS NOT NULL)",
            name=op.f("ck_plan_approvals_approved_at_iff_approved"),
        ),
        sa.CheckConstraint(
            "decision IN ('approved', 'rejected')", name=op.f("ck_plan_approvals_decision")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["app.runs.id"],
            name=op.f("fk_plan_approvals_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_approvals")),
        sa.UniqueConstraint(
            "run_id", "plan_sha256", name=op.f("uq_plan_approvals_run_id_plan_sha256")
        ),
        schema="app",
    )
    op.create_index(
        op.f("ix_plan_approvals_run_id"), "plan_approvals", ["run_id"], unique=False, schema="app"
    )
    op.create_table(
        "step_runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_step_runs_status")
        ),
        sa.CheckConstraint(
            "step_id IN ('CompileST', 'ApplyPatchST', 'DecideST', 'ExecuteST')",
            name=op.f("ck_step_runs_step_id"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["app.runs.id"], name=op.f("fk_step_runs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_runs")),
        sa.UniqueConstraint("run_id", "step_id", name=op.f("uq_step_runs_run_id_step_id")),
        schema="app",
    )
    op.create_index(
        op.f("ix_step_runs_run_id"), "step_runs", ["run_id"], unique=False, schema="app"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_step_runs_run_id"), table_name="step_runs", schema="app")
    op.drop_table("step_runs", schema="app")
    op.drop_index(op.f("ix_plan_approvals_run_id"), table_name="plan_approvals", schema="app")
    op.drop_table("plan_approvals", schema="app")
    op.drop_index(op.f("ix_opencode_calls_run_id"), table_name="opencode_calls", schema="app")
    op.drop_table("opencode_calls", schema="app")
    op.drop_index(op.f("ix_artifacts_run_id"), table_name="artifacts", schema="app")
    op.drop_table("artifacts", schema="app")
    op.drop_table("runs", schema="app")
    op.drop_table("intents", schema="app")
