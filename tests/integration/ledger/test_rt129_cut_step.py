"""Red-team helper-129: a turn aborted for passing its token bound spends its totals only;
the step the abort cut is billed nothing.

The collector aborts right after the ``message.updated`` of the step that crossed the
bound, i.e. as the daemon sends the NEXT step (the whole conversation again) to the
provider. The abort cuts that request: the provider bills the input it already took,
but OpenCode writes the aborted message with tokens 0 (tests/fixtures/opencode/
events.prompt-async.aborted.sse.txt), so the session's totals miss it. migration 0027
covered a cut step with ``greatest(totals, reservation)``: for a CallTokenBound abort the
totals are always past the reservation, so the floor never applied and the cut step,
up to a whole context, was never spent (nor any cut step of a timed_out/aborted turn
whose completed steps already passed its reservation). Migration 0032 spends it: the
turn's last counted step again, or (only the totals known, as here) the lesser of the
totals and the reservation.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.factories import RunFactory

pytestmark = pytest.mark.integration


def test_rt129_a_call_aborted_past_its_bound_spends_something_for_the_step_it_cut(
    db: Session,
) -> None:
    run = RunFactory()
    db.commit()
    db.execute(
        text(
            "UPDATE app.runs SET reserved_usd_micro = 3000000, reserved_tokens = 200000"
            " WHERE id = :r"
        ),
        {"r": run.id},
    )
    db.execute(
        text(
            "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
            " session_id, daemon, request, status, reserved_usd_micro, reserved_tokens)"
            " VALUES (md5(:r), :r, 'CompileST', 1, 'plan', 'ses_1', 'd',"
            " '{\"directory\": \"/w\"}'::jsonb, 'sent', 3000000, 200000)"
        ),
        {"r": run.id},
    )
    db.commit()
    # two completed steps of 100,000 and 150,000 input tokens, then the cut third step
    usage = {"total_tokens": 250_000, "input_tokens": 250_000, "cost_usd": 3.75}
    db.execute(
        text(
            "UPDATE app.opencode_calls SET status = 'aborted', error_name = 'CallTokenBound',"
            " usage = CAST(:u AS jsonb) WHERE run_id = :r"
        ),
        {"r": run.id, "u": json.dumps(usage)},
    )
    db.commit()
    spent = db.execute(
        text("SELECT spent_tokens, spent_usd_micro FROM app.opencode_calls WHERE run_id = :r"),
        {"r": run.id},
    ).one()
    # before: (250000, 3750000): the cut step, which resent >= 150,000 tokens of
    # conversation, was spent as nothing
    assert spent.spent_tokens > 250_000
    assert spent.spent_usd_micro > 3_750_000
