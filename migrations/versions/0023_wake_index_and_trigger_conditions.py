"""The collector's wake finds a session's call by index; two triggers fire only when they act.

``_WAKE`` (shared/db/repos/ledger.py) marks the calls of ended sessions idle: ``session_id
= ANY(...) AND status IN ('claimed', 'sent')``. The only index on ``session_id`` was
partial (``status = 'sent'``), which a query also accepting ``claimed`` cannot use, so
every wake scanned the whole ledger: measured 884 buffers and ~0.9 ms per wake with a
thousand rows, growing with every call ever made. A plain index makes it a bitmap index
scan (8 buffers, 0.04 ms). The partial index stays: it serves the collector's reconcile
of ``sent`` calls.

``step_runs_require_approved_patch`` ran its plpgsql function (and planned its IF) on
every insert and status change of every step, eight per run, to act only on an
ApplyPatchST becoming ``succeeded``; ``settle_call`` likewise on every status change of a
call, to act only on a final one not yet settled. Each now has a WHEN clause naming
exactly the condition its function's IF tests first, so the function (unchanged) runs
only when it may act: what it refuses and what it writes are the same.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

FINAL_CALL_STATUSES = (
    "('succeeded', 'failed', 'timed_out', 'aborted', 'succeeded_late', 'failed_late')"
)
"""As ``app.settle_call``'s IF names them (migration 0016)."""


def upgrade() -> None:
    op.create_index("ix_opencode_calls_session", "opencode_calls", ["session_id"], schema="app")
    op.execute("DROP TRIGGER step_runs_require_approved_patch ON app.step_runs")
    op.execute(
        "CREATE TRIGGER step_runs_require_approved_patch"
        " BEFORE INSERT OR UPDATE OF status ON app.step_runs FOR EACH ROW"
        " WHEN (NEW.step_id = 'ApplyPatchST' AND NEW.status = 'succeeded')"
        " EXECUTE FUNCTION app.require_approved_patch()"
    )
    op.execute("DROP TRIGGER settle_call ON app.opencode_calls")
    op.execute(
        "CREATE TRIGGER settle_call BEFORE UPDATE OF status ON app.opencode_calls FOR EACH ROW"
        f" WHEN (NEW.settled_at IS NULL AND NEW.status IN {FINAL_CALL_STATUSES})"
        " EXECUTE FUNCTION app.settle_call()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER settle_call ON app.opencode_calls")
    op.execute(
        "CREATE TRIGGER settle_call BEFORE UPDATE OF status ON app.opencode_calls"
        " FOR EACH ROW EXECUTE FUNCTION app.settle_call()"
    )
    op.execute("DROP TRIGGER step_runs_require_approved_patch ON app.step_runs")
    op.execute(
        "CREATE TRIGGER step_runs_require_approved_patch"
        " BEFORE INSERT OR UPDATE OF status ON app.step_runs"
        " FOR EACH ROW EXECUTE FUNCTION app.require_approved_patch()"
    )
    op.drop_index("ix_opencode_calls_session", table_name="opencode_calls", schema="app")
