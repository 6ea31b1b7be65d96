"""A budget stop end to end: the next call would pass the run's budget, so it is not sent;
the run waits, an approver raises the budget, and the run goes on to the end (real API,
worker, beat, collector and oc-compat processes; each call reserves KODO_CALL_TOKEN_BOUND
tokens at KODO_PRICE_USD_PER_MTOK: 200,000 x $15 per million = $3.00)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.e2e.conftest import Api
from tests.triage import RETRIES_EXPLAINED

pytestmark = pytest.mark.e2e


def test_a_call_past_the_budget_is_not_sent_until_an_approver_raises_it(
    api: Api, engine: Engine, sample_repo: Path
) -> None:
    created = api.http.post(
        "/intents",
        json={"repo": str(sample_repo), "goal": "Add a note to README.md", "budget_usd": 3.001},
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["intentId"]
    assert api.http.post(f"/intents/{run_id}/run").status_code == 202
    plan = api.wait_for(run_id, {"waiting_input"})
    assert plan["budget"]["usd"]["limit"] == pytest.approx(3.001)
    assert 0 < plan["budget"]["usd"]["spent"] < 0.01, "CompileST's call, settled"
    assert plan["budget"]["usd"]["reserved"] == 0
    alice = api.bearer("alice", "approver")
    approved = api.http.post(
        f"/runs/{run_id}/approve-plan", json={"plan_sha256": plan["planSha256"]}, headers=alice
    )
    assert approved.status_code == 200, approved.text

    stopped = api.wait_for(run_id, {"waiting_input"})  # applying, then the budget stop
    assert stopped["nextAction"] == "await:budget"
    assert stopped["lastStep"] == "ApplyPatchST"
    assert stopped["error"].startswith("budget: the next provider call was not sent")
    with engine.connect() as conn:
        applies = conn.execute(
            text(
                "SELECT count(*) FROM app.opencode_calls"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert applies == 0, "the call past the budget was never claimed, so never sent"
    short = api.http.post(f"/runs/{run_id}/budget", json={"budget_usd": 3.002}, headers=alice)
    assert short.status_code == 409, "still too little for the next call"

    raised = api.http.post(f"/runs/{run_id}/budget", json={"budget_usd": 10}, headers=alice)
    assert raised.status_code == 200, raised.text
    assert raised.json()["resumed"] == "ApplyPatchST"

    done = api.wait_for(run_id, {"succeeded"})
    assert done["error"] is None, "the budget stop's error went with the stop"
    budget = done["budget"]["usd"]
    assert budget["reserved"] == 0
    assert budget["spent"] <= budget["limit"] == 10
    with engine.connect() as conn:
        settled = conn.execute(
            text(
                "SELECT sum(ceil((usage->>'cost_usd')::numeric * 1000000)) AS usd,"
                " count(*) FILTER (WHERE settled_at IS NULL) AS open"
                " FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
        counted = conn.execute(text(RETRIES_EXPLAINED), {"r": run_id}).one()
    assert settled.open == 0
    assert budget["spent"] == pytest.approx(float(settled.usd) / 1_000_000)
    assert counted.retry_count == counted.explained, "a raised budget is no retry"


@pytest.mark.parametrize("refused_aborts", [0, 1], ids=["abort-confirmed", "first-abort-refused"])
def test_a_turn_that_spends_past_the_call_token_bound_is_aborted_while_it_runs(
    api: Api, engine: Engine, sample_repo: Path, refused_aborts: int
) -> None:
    """The plan's turn reads for 300,000 tokens in its first step, then would think for a
    minute: the collector sees the step's usage pass the 200,000 tokens its call
    reserved, marks the call and aborts the turn (if the daemon refuses that abort, the
    collector wakes the step, which asks again); the step records it aborted under the
    rule CallTokenBound, billed what it used, and the run fails closed without a retry
    (another attempt would spend as much again)."""
    goal = "Add a note to README.md [oc:spend=300000] [oc:slow=60000]"
    run_id = api.submit(sample_repo, f"{goal} [oc:abort-fails={refused_aborts}]")
    failed = api.wait_for(run_id, {"failed"}, deadline_s=40)
    with engine.connect() as conn:
        calls = conn.execute(
            text(
                "SELECT attempt, status, error_name, error, spent_tokens, duration_ms,"
                " (usage->>'total_tokens')::bigint AS used"
                " FROM app.opencode_calls WHERE run_id = :r ORDER BY id"
            ),
            {"r": run_id},
        ).all()
    said = f"{failed['error']}\n{calls}\n{api.stack.proc('collector').log_tail(40)}"
    assert failed["lastStep"] == "CompileST", said
    assert "CallTokenBound" in failed["error"], said
    assert len(calls) == 1, said  # no second attempt
    [call] = calls
    assert (call.attempt, call.status, call.error_name) == (1, "aborted", "CallTokenBound")
    assert "the turn used 300,000 tokens" in call.error
    assert "past the call's bound of 200,000 tokens" in call.error
    assert call.used >= 300_000, "the turn's whole usage is recorded"
    assert call.spent_tokens >= 300_000, "billed what it used, past its reservation"
    # the step the abort cut resent the conversation and is in no totals (migration
    # 0032): spent as the last counted step again, or at least the lesser of the totals
    # and the 200,000-token reservation when only the totals were read
    assert call.spent_tokens >= call.used + 200_000, said
    assert call.duration_ms < 60_000, "stopped while it ran, not at the end of its hold"
