"""A turn cut short also spends the step it was cut in, not only its totals.

Migration 0027 settled a call whose turn was cut short (timed out, aborted, its daemon
lost, ``failed_late`` with those errors) at the greater of its totals and its
reservation. The step the cut stopped is in no totals: OpenCode writes the cut message
with tokens 0, though that step had resent the whole conversation to the provider,
which bills the input it took. While the completed steps stayed under the reservation
the floor covered it; once they passed it (always so for a turn kodo aborted for
passing its token bound, ``CallTokenBound``) the cut step, up to a whole context, was
spent as nothing (red-team helper-129).

Such a call now spends, in each dimension, the greater of its reservation and its
totals plus an estimate of the cut step: the usage of the turn's last counted step
(``usage.last_step_tokens`` and ``last_step_cost_usd``, written by
``shared.opencode.turn_inspection.turn_usage`` when the turn's messages were read: the
next step resent about that context), or, when only the session's totals were read,
the lesser of the totals and the reservation (the last step's context is within both).
Other final calls spend their usage, as before.

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

CUT_STATUSES = "('timed_out', 'aborted')"
CUT_ERRORS = "('DaemonLost', 'SessionLost', 'TurnLost')"
CUT_LATE_ERRORS = "('OpenCodeTimeout', 'OpenCodeAborted')"
"""A final call whose turn was cut short (``shared.domain.vocab.CUT_SHORT_*`` name them)."""

_USD = """
  CASE WHEN jsonb_typeof({u}->'{key}') = 'number'
       THEN least(greatest(ceil(({u}->>'{key}')::numeric * 1000000), 0),
                  1000000000000000)::bigint
       ELSE {otherwise} END
"""
_TOKENS = """
  CASE WHEN jsonb_typeof({u}->'{key}') = 'number'
       THEN least(greatest(({u}->>'{key}')::numeric, 0), 1000000000000000)::bigint
       ELSE {otherwise} END
"""
# Each read is bounded as turn_inspection.MAX_TOKENS and MAX_COST_USD bound what kodo
# writes: a row written otherwise cannot overflow the sums below.

_CUT_USD = _USD.format(
    u="NEW.usage",
    key="last_step_cost_usd",
    otherwise="least(usd, coalesce(NEW.reserved_usd_micro, 0))",
)
_CUT_TOKENS = _TOKENS.format(
    u="NEW.usage",
    key="last_step_tokens",
    otherwise="least(tokens, coalesce(NEW.reserved_tokens, 0))",
)
"""The cut step's estimate: the turn's last counted step, else what the totals allow."""

_SETTLE = f"""
CREATE OR REPLACE FUNCTION app.settle_call() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  usd bigint := {_USD.format(u="NEW.usage", key="cost_usd", otherwise="0")};
  tokens bigint := {_TOKENS.format(u="NEW.usage", key="total_tokens", otherwise="0")};
  cut_usd bigint;
  cut_tokens bigint;
BEGIN
  IF NEW.settled_at IS NULL AND NEW.status IN
     ('succeeded', 'failed', 'timed_out', 'aborted', 'succeeded_late', 'failed_late') THEN
    IF NEW.session_id IS NOT NULL AND (
         NEW.status IN {CUT_STATUSES} OR NEW.error_name IN {CUT_ERRORS}
         OR (NEW.status = 'failed_late' AND NEW.error_name IN {CUT_LATE_ERRORS})) THEN
      cut_usd := {_CUT_USD};
      cut_tokens := {_CUT_TOKENS};
      usd := greatest(usd + cut_usd, coalesce(NEW.reserved_usd_micro, 0));
      tokens := greatest(tokens + cut_tokens, coalesce(NEW.reserved_tokens, 0));
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

_COST_0027 = """
  CASE WHEN jsonb_typeof({u}->'cost_usd') = 'number'
       THEN greatest(ceil(({u}->>'cost_usd')::numeric * 1000000), 0)::bigint ELSE 0 END
"""
_TOKENS_0027 = """
  CASE WHEN jsonb_typeof({u}->'total_tokens') = 'number'
       THEN greatest(({u}->>'total_tokens')::numeric, 0)::bigint ELSE 0 END
"""

_SETTLE_0027 = f"""
CREATE OR REPLACE FUNCTION app.settle_call() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  usd bigint := {_COST_0027.format(u="NEW.usage")};
  tokens bigint := {_TOKENS_0027.format(u="NEW.usage")};
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


def upgrade() -> None:
    op.execute(_SETTLE)


def downgrade() -> None:
    op.execute(_SETTLE_0027)
