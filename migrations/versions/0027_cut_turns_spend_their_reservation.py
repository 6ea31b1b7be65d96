"""A call whose turn was cut short spends at least its reservation; each call's spend is kept.

``app.settle_call`` (migration 0016) spent a call's ``usage``: the daemon's session
totals. Those count only the steps that ended. A turn cut short has a step the daemon
never counted: kodo aborted it at its deadline (``timed_out``), a cancel or someone
else aborted it (``aborted``), its daemon died or restarted under it (``DaemonLost``,
``SessionLost``), or the connection broke after the prompt left (``TurnLost``); a
claimant that records one of these after another delivery declared the call unknown
writes ``failed_late`` with the same error name. The provider may have charged for
that step, and settling the totals alone released the rest of the reservation. A model
could then stall its last step on purpose and keep it unbilled, and the run's settled
costs no longer bounded what it was charged. Such a call now spends the greater of its
totals and its reservation (the bound one call may use, held while it ran) in each
dimension. A call without a session never sent a prompt (a timeout creating the
session, say): it is never cut short. Other final calls spend their usage, as before.

``app.opencode_calls`` gains ``spent_usd_micro`` and ``spent_tokens``: what the settle
added to the run, written by the trigger in the same statement (NULL until settled).
A run's ``spent_*`` is the sum of its calls' columns, and ``/metrics`` reads them
instead of recomputing the rule. Calls settled before this migration are backfilled
with what 0016 spent for them.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

CUT_STATUSES = "('timed_out', 'aborted')"
CUT_ERRORS = "('DaemonLost', 'SessionLost', 'TurnLost')"
CUT_LATE_ERRORS = "('OpenCodeTimeout', 'OpenCodeAborted')"
"""A final call whose turn was cut short (``shared.domain.vocab.CUT_SHORT_*`` name them)."""

SPENT_WHEN_SETTLED = (
    "(settled_at IS NULL) = (spent_usd_micro IS NULL)"
    " AND (settled_at IS NULL) = (spent_tokens IS NULL)"
    " AND spent_usd_micro >= 0 AND spent_tokens >= 0"
)
"""As ``shared.db.models.OpenCodeCall`` declares it."""

_COST = """
  CASE WHEN jsonb_typeof({u}->'cost_usd') = 'number'
       THEN greatest(ceil(({u}->>'cost_usd')::numeric * 1000000), 0)::bigint ELSE 0 END
"""
_TOKENS = """
  CASE WHEN jsonb_typeof({u}->'total_tokens') = 'number'
       THEN greatest(({u}->>'total_tokens')::numeric, 0)::bigint ELSE 0 END
"""

_SETTLE = f"""
CREATE OR REPLACE FUNCTION app.settle_call() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  usd bigint := {_COST.format(u="NEW.usage")};
  tokens bigint := {_TOKENS.format(u="NEW.usage")};
BEGIN
  IF NEW.settled_at IS NULL AND NEW.status IN
     ('succeeded', 'failed', 'timed_out', 'aborted', 'succeeded_late', 'failed_late') THEN
    IF NEW.session_id IS NOT NULL AND (
         NEW.status IN {CUT_STATUSES} OR NEW.error_name IN {CUT_ERRORS}
         OR (NEW.status = 'failed_late' AND NEW.error_name IN {CUT_LATE_ERRORS})) THEN
      usd := greatest(usd, coalesce(NEW.reserved_usd_micro, 0));
      tokens := greatest(tokens, coalesce(NEW.reserved_tokens, 0));
    END IF;
    UPDATE app.runs SET
      spent_usd_micro = spent_usd_micro + usd,
      spent_tokens = spent_tokens + tokens,
      reserved_usd_micro = reserved_usd_micro - coalesce(NEW.reserved_usd_micro, 0),
      reserved_tokens = reserved_tokens - coalesce(NEW.reserved_tokens, 0)
    WHERE id = NEW.run_id;
    NEW.spent_usd_micro := usd;
    NEW.spent_tokens := tokens;
    NEW.settled_at := statement_timestamp();
  END IF;
  RETURN NEW;
END $$
"""  # noqa: S608 - constant SQL built from the constants above, no input

_SETTLE_0016 = f"""
CREATE OR REPLACE FUNCTION app.settle_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.settled_at IS NULL AND NEW.status IN
     ('succeeded', 'failed', 'timed_out', 'aborted', 'succeeded_late', 'failed_late') THEN
    UPDATE app.runs SET
      spent_usd_micro = spent_usd_micro + {_COST.format(u="NEW.usage")},
      spent_tokens = spent_tokens + {_TOKENS.format(u="NEW.usage")},
      reserved_usd_micro = reserved_usd_micro - coalesce(NEW.reserved_usd_micro, 0),
      reserved_tokens = reserved_tokens - coalesce(NEW.reserved_tokens, 0)
    WHERE id = NEW.run_id;
    NEW.settled_at := statement_timestamp();
  END IF;
  RETURN NEW;
END $$
"""  # noqa: S608 - constant SQL built from the constants above, no input


def upgrade() -> None:
    for name in ("spent_usd_micro", "spent_tokens"):
        op.add_column("opencode_calls", sa.Column(name, sa.BigInteger()), schema="app")
    backfill = (
        f"UPDATE app.opencode_calls SET spent_usd_micro = {_COST.format(u='usage')},"  # noqa: S608 - constant SQL, no input
        f" spent_tokens = {_TOKENS.format(u='usage')} WHERE settled_at IS NOT NULL"
    )
    op.execute(backfill)
    op.create_check_constraint(
        op.f("ck_opencode_calls_spent_when_settled"),
        "opencode_calls",
        SPENT_WHEN_SETTLED,
        schema="app",
    )
    op.execute(_SETTLE)


def downgrade() -> None:
    op.execute(_SETTLE_0016)
    op.drop_constraint(op.f("ck_opencode_calls_spent_when_settled"), "opencode_calls", schema="app")
    for name in ("spent_usd_micro", "spent_tokens"):
        op.drop_column("opencode_calls", name, schema="app")
