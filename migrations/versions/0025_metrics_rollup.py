"""``/metrics`` folds settled history into a rollup: a scrape reads only recent rows.

Every scrape aggregated the whole history (step and call durations, call usage, answer
sources, approval latency, what runs spent): at 200,000 ended runs about 1.4 s and
290k buffers, every 15 s, growing without bound. ``app.metrics_rollup`` holds those
aggregates over every fact stamped before ``app.metrics_rollup_state.watermark``; a
scrape folds the facts stamped since (up to a horizon no uncommitted transaction can
stamp before, see ``shared.db.repos.metric_facts``) and adds the newer ones live.

A fact is found by the database time that made it, read by an index range scan:

* ``ix_step_runs_finished`` / ``ix_step_rounds_finished``: a step round's outcome, by
  ``finished_at``; ``ix_step_runs_unfinished_facts`` is empty unless a row holds a
  duration or output without ``finished_at`` (the write path never makes one; the
  scrape still counts such a row, as the whole-history query did).
* ``ix_step_runs_next_round`` / ``ix_step_rounds_next_round``: a round that ended by
  the next one's start (``started_at`` of round > 1), whose outcome left ``step_runs``
  for ``step_rounds`` and is no longer counted.
* ``ix_opencode_calls_settled``: a call by ``settled_at`` (set once, when its status
  becomes final: nothing the metrics read changes after); NULL (claimed, sent,
  unknown) is read live.
* ``ix_plan_approvals_dispatched``: a dispatched approval by ``dispatched_at``.

What they cost the writers: one more index entry when a call is claimed and at each of
its status changes (already non-HOT: ``status`` is in a partial index's predicate); a
step's finish and a new round are no longer HOT updates (``finished_at`` is indexed
now), so they write entries in the table's three other indexes too; lease renewals,
parks and resumes stay HOT. An approval's dispatch writes one entry.

The indexes are built in the migration's transaction (writes to those tables wait for
it): 2.7 s for the whole migration on 200k runs, 700k steps and 770k calls. The first
scrape after it folds the whole history once (4.3 s there); each later one folds only
what settled since the previous.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_ANOMALY = "finished_at IS NULL AND (duration_ms IS NOT NULL OR output IS NOT NULL)"


def upgrade() -> None:
    op.create_table(
        "metrics_rollup",
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("labels", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("counts", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("sums", postgresql.ARRAY(sa.Numeric()), nullable=False),
        sa.PrimaryKeyConstraint("family", "labels", name=op.f("pk_metrics_rollup")),
        schema="app",
    )
    op.create_table(
        "metrics_rollup_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("folded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_metrics_rollup_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics_rollup_state")),
        schema="app",
    )
    op.create_index(
        "ix_step_runs_finished",
        "step_runs",
        ["finished_at"],
        schema="app",
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_step_runs_unfinished_facts",
        "step_runs",
        ["id"],
        schema="app",
        postgresql_where=sa.text(_ANOMALY),
    )
    op.create_index(
        "ix_step_runs_next_round",
        "step_runs",
        ["started_at"],
        schema="app",
        postgresql_where=sa.text('"round" > 1'),
    )
    op.create_index("ix_step_rounds_finished", "step_rounds", ["finished_at"], schema="app")
    op.create_index(
        "ix_step_rounds_next_round",
        "step_rounds",
        ["started_at"],
        schema="app",
        postgresql_where=sa.text('"round" > 1'),
    )
    op.create_index("ix_opencode_calls_settled", "opencode_calls", ["settled_at"], schema="app")
    op.create_index(
        "ix_plan_approvals_dispatched",
        "plan_approvals",
        ["dispatched_at"],
        schema="app",
        postgresql_where=sa.text("approved_at IS NOT NULL AND dispatched_at IS NOT NULL"),
    )


def downgrade() -> None:
    for name, table in (
        ("ix_plan_approvals_dispatched", "plan_approvals"),
        ("ix_opencode_calls_settled", "opencode_calls"),
        ("ix_step_rounds_next_round", "step_rounds"),
        ("ix_step_rounds_finished", "step_rounds"),
        ("ix_step_runs_next_round", "step_runs"),
        ("ix_step_runs_unfinished_facts", "step_runs"),
        ("ix_step_runs_finished", "step_runs"),
    ):
        op.drop_index(name, table_name=table, schema="app")
    op.drop_table("metrics_rollup_state", schema="app")
    op.drop_table("metrics_rollup", schema="app")
