"""Runs record their step contract; a run may wait for an upgrade; one ledger row per attempt.

- ``runs.contract_version``: the step contract (``shared.domain.step_contract``) the run
  was started under. NULL for runs started before this revision: the first step that
  enters such a run records its own.
- ``runs.status`` may be ``waiting_upgrade``: a worker of another step contract parked
  the run instead of asking its step's agent in other words.
- ``UNIQUE (run_id, step_id, attempt)`` on ``opencode_calls``: a changed prompt for an
  attempt already claimed is a new op_key; the database refuses its row, so it is never
  a second payment. The upgrade refuses (naming the rule) a ledger that already holds
  two rows for one attempt, rather than deleting a paid call's record.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_STATUSES_0009 = (
    "queued",
    "compiling",
    "waiting_input",
    "applying",
    "deciding",
    "executing",
    "succeeded",
    "failed",
    "rejected",
    "cancelled",
)
_STATUSES = (*_STATUSES_0009[:6], "waiting_upgrade", *_STATUSES_0009[6:])


def _in(values: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{v}'" for v in values))


def _replace_status_check(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_runs_status"), "runs", schema="app", type_="check")
    op.create_check_constraint(op.f("ck_runs_status"), "runs", _in(values), schema="app")


def upgrade() -> None:
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT run_id, step_id, attempt, count(*) AS n FROM app.opencode_calls"
                " GROUP BY run_id, step_id, attempt HAVING count(*) > 1 ORDER BY run_id LIMIT 5"
            )
        )
        .all()
    )
    if twice:
        listed = "; ".join(f"run {r.run_id} {r.step_id} attempt {r.attempt}: {r.n}" for r in twice)
        raise RuntimeError(
            "rule ledger_attempt_unique: app.opencode_calls holds more than one row for an"
            f" attempt ({listed}); each may be a paid call: review them before upgrading"
        )
    op.add_column("runs", sa.Column("contract_version", sa.String(length=64)), schema="app")
    _replace_status_check(_STATUSES)
    op.create_unique_constraint(
        op.f("uq_opencode_calls_run_id_step_id_attempt"),
        "opencode_calls",
        ["run_id", "step_id", "attempt"],
        schema="app",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_opencode_calls_run_id_step_id_attempt"),
        "opencode_calls",
        schema="app",
        type_="unique",
    )
    # The older code knows no parked run: each goes back to the step it was parked at.
    op.execute(
        "UPDATE app.runs SET status = CASE last_step WHEN 'CompileST' THEN 'compiling'"
        " WHEN 'ApplyPatchST' THEN 'applying' WHEN 'DecideST' THEN 'deciding'"
        " WHEN 'ExecuteST' THEN 'executing' END,"
        " next_action = 'run:' || last_step WHERE status = 'waiting_upgrade'"
    )
    _replace_status_check(_STATUSES_0009)
    op.drop_column("runs", "contract_version", schema="app")
