"""Budgets: reserved before each provider call, settled by the database when it ends.

``app.intents`` and ``app.runs`` gain ``budget_usd_micro`` and ``budget_tokens`` (NULL:
no budget); ``app.runs`` also ``spent_*`` and ``reserved_*`` (micro-dollars and tokens).
``app.opencode_calls`` gains the reservation it holds (``reserved_usd_micro``,
``reserved_tokens``) and ``settled_at``.

The trigger ``app.settle_call`` settles a call exactly once, whichever statement ends
it (the claimant, the collector, a cancel, a late answer): when its status becomes final
(not claimed, sent or unknown: an unknown call may still be paying, so it keeps its
reservation), the run's reservation is released and the call's usage (``cost_usd`` and
``total_tokens`` from the daemon's session totals) is spent.

Existing calls are settled by this migration (their usage counted as spent).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FINAL = "('succeeded', 'failed', 'timed_out', 'aborted', 'succeeded_late', 'failed_late')"

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
BEGIN
  IF NEW.settled_at IS NULL AND NEW.status IN {FINAL} THEN
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


def _money(table: str, *names: str, default: bool = False) -> None:
    for name in names:
        op.add_column(
            table,
            sa.Column(
                name,
                sa.BigInteger(),
                nullable=not default,
                server_default="0" if default else None,
            ),
            schema="app",
        )


def upgrade() -> None:
    _money("intents", "budget_usd_micro", "budget_tokens")
    op.create_check_constraint(
        op.f("ck_intents_budget"),
        "intents",
        "coalesce(budget_usd_micro, 0) >= 0 AND coalesce(budget_tokens, 0) >= 0",
        schema="app",
    )
    _money("runs", "budget_usd_micro", "budget_tokens")
    _money(
        "runs",
        "spent_usd_micro",
        "spent_tokens",
        "reserved_usd_micro",
        "reserved_tokens",
        default=True,
    )
    op.create_check_constraint(
        op.f("ck_runs_budget"),
        "runs",
        "coalesce(budget_usd_micro, 0) >= 0 AND coalesce(budget_tokens, 0) >= 0"
        " AND spent_usd_micro >= 0 AND spent_tokens >= 0"
        " AND reserved_usd_micro >= 0 AND reserved_tokens >= 0",
        schema="app",
    )
    _money("opencode_calls", "reserved_usd_micro", "reserved_tokens")
    op.add_column(
        "opencode_calls", sa.Column("settled_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.execute(
        f"""
        UPDATE app.runs r SET spent_usd_micro = s.usd, spent_tokens = s.tokens
        FROM (SELECT run_id, sum({_COST.format(u="usage")}) AS usd,
                     sum({_TOKENS.format(u="usage")}) AS tokens
              FROM app.opencode_calls WHERE status IN {FINAL} GROUP BY run_id) s
        WHERE r.id = s.run_id
        """  # noqa: S608 - constant SQL, no input
    )
    settled = "UPDATE app.opencode_calls SET settled_at = coalesce(finished_at, created_at)"
    op.execute(f"{settled} WHERE status IN {FINAL}")
    op.execute(_SETTLE)
    op.execute(
        "CREATE TRIGGER settle_call BEFORE UPDATE OF status ON app.opencode_calls"
        " FOR EACH ROW EXECUTE FUNCTION app.settle_call()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS settle_call ON app.opencode_calls")
    op.execute("DROP FUNCTION IF EXISTS app.settle_call()")
    op.drop_column("opencode_calls", "settled_at", schema="app")
    for name in ("reserved_tokens", "reserved_usd_micro"):
        op.drop_column("opencode_calls", name, schema="app")
    op.drop_constraint(op.f("ck_runs_budget"), "runs", schema="app", type_="check")
    for name in (
        "reserved_tokens",
        "reserved_usd_micro",
        "spent_tokens",
        "spent_usd_micro",
        "budget_tokens",
        "budget_usd_micro",
    ):
        op.drop_column("runs", name, schema="app")
    op.drop_constraint(op.f("ck_intents_budget"), "intents", schema="app", type_="check")
    op.drop_column("intents", "budget_tokens", schema="app")
    op.drop_column("intents", "budget_usd_micro", schema="app")
