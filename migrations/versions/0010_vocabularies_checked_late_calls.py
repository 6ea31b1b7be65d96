"""Every stored vocabulary is checked; a call answered after it was declared unknown
is recorded as such.

``app.opencode_calls.status`` gains ``succeeded_late`` and ``failed_late``: the
claimant's outcome (response, usage, error) when another delivery had already declared
the call ``unknown``. Before, the late answer was used but never recorded, so a paid
call read ``unknown`` with no response.

``app.artifacts`` gains checks on ``kind`` and ``step_id``, the two vocabularies the
database did not check. The values are written out here (a migration is a snapshot);
``tests/integration/test_schema.py`` compares every check with its enum in
``shared/domain``.

Downgrade: a late row becomes ``unknown`` again, with the declaration's error (the
text the next attempt's prompt quoted); its recorded response and usage stay.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_CALL_STATUSES_0001 = ("claimed", "succeeded", "failed", "timed_out", "aborted", "unknown")
_CALL_STATUSES = (*_CALL_STATUSES_0001, "succeeded_late", "failed_late")
_ARTIFACT_KINDS = ("plan_card", "patch", "decision", "command_output", "diagnostic")
_STEP_IDS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")
_UNKNOWN_ERROR = "claimed but never recorded: the calling worker stopped mid-call"


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _set_call_statuses(allowed: tuple[str, ...]) -> None:
    op.drop_constraint(
        op.f("ck_opencode_calls_status"), "opencode_calls", schema="app", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_opencode_calls_status"), "opencode_calls", _in("status", allowed), schema="app"
    )


def upgrade() -> None:
    _set_call_statuses(_CALL_STATUSES)
    op.create_check_constraint(
        op.f("ck_artifacts_kind"), "artifacts", _in("kind", _ARTIFACT_KINDS), schema="app"
    )
    op.create_check_constraint(
        op.f("ck_artifacts_step_id"), "artifacts", _in("step_id", _STEP_IDS), schema="app"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_artifacts_step_id"), "artifacts", schema="app", type_="check")
    op.drop_constraint(op.f("ck_artifacts_kind"), "artifacts", schema="app", type_="check")
    op.get_bind().execute(
        sa.text(
            "UPDATE app.opencode_calls SET status = 'unknown', error_name = 'OutcomeUnknown',"
            " error = :error WHERE status IN ('succeeded_late', 'failed_late')"
        ),
        {"error": _UNKNOWN_ERROR},
    )
    _set_call_statuses(_CALL_STATUSES_0001)
