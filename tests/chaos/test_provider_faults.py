"""The OpenCode-compatible server misbehaves: every run still ends, failing closed.

A stalled call times out (and is aborted), an HTTP 500 is transient (retried with
backoff; a daemon that answers it to every attempt spends the budget), a body that is
not JSON is a failed attempt, and a server that dies mid-call leaves a failed attempt;
none is ever sent twice under one op_key.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.chaos.conftest import Scenario
from tests.chaos.harness import Chaos, branch_commits, title
from tests.triage import RETRIES_EXPLAINED
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos


def _diagnostic(chaos: Chaos, run_id: str) -> dict[str, object]:
    body = chaos.artifact(run_id, "diagnostic.json")
    assert body is not None, "a failed run carries diagnostic.json"
    report: dict[str, object] = json.loads(body)
    return report


def test_a_stalled_server_times_out_every_attempt_and_the_run_fails_with_a_diagnostic(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "oc-compat stalls (timeout)"
    run_id = chaos.submit("Add a note to README.md [oc:slow=60000]")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"failed"}, deadline_s=45)
    calls = [(c.attempt, c.status) for c in chaos.ledger(run_id, "CompileST")]
    assert calls == [(1, "timed_out"), (2, "timed_out"), (3, "timed_out")], chaos.explain([run_id])
    assert "no valid plan after 3 attempts" in (chaos.run_row(run_id).error or "")
    assert len(_diagnostic(chaos, run_id)["attempts"]) == 3  # type: ignore[arg-type]
    assert chaos.oc_stats()["aborts"] >= 3, "each timed-out session is aborted"
    chaos.assert_exactly_once([run_id])


def test_an_http_500_on_every_attempt_spends_the_budget_and_fails_the_run_saying_so(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "oc-compat answers HTTP 500 every time"
    run_id = chaos.submit("Add a note to README.md [oc:http500]")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"failed"}, deadline_s=60)
    calls = [(c.attempt, c.status, c.error_name) for c in chaos.ledger(run_id)]
    # prompt_async took each prompt (204); the daemon failed inside the turn, said so in
    # session.error, and the collected turn had no answer.
    assert calls == [(n, "failed", "TurnUnanswered") for n in (1, 2, 3)], chaos.explain([run_id])
    error = chaos.run_row(run_id).error or ""
    assert "no valid plan after 3 attempts: the provider failed every attempt" in error
    assert "the daemon said: UnknownError: Unexpected server error" in error
    attempts = _diagnostic(chaos, run_id)["attempts"]
    assert isinstance(attempts, list)
    assert [a["kind"] for a in attempts] == ["transient"] * 3
    chaos.assert_exactly_once([run_id])


def test_an_http_500_on_one_attempt_is_retried_and_the_run_succeeds(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "oc-compat answers HTTP 500 once"
    run_id = chaos.submit("Add a note to README.md [oc:http500-attempts=1]")
    scenario.track(run_id)
    final = chaos.drive([run_id], 60)[run_id]
    assert final == "succeeded", chaos.explain([run_id])
    calls = [(c.attempt, c.status, c.error_name) for c in chaos.ledger(run_id, "CompileST")]
    assert calls == [(1, "failed", "TurnUnanswered"), (2, "succeeded", None)]
    assert len(branch_commits(chaos.repo_of(run_id), run_id)) == 1
    chaos.assert_exactly_once([run_id])


def test_a_reply_that_is_not_json_is_a_failed_attempt_and_the_run_fails_closed(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "oc-compat answers invalid JSON"
    run_id = chaos.submit("Add a note to README.md [oc:garbage]")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"failed"}, deadline_s=30)
    calls = [(c.attempt, c.status) for c in chaos.ledger(run_id)]
    assert calls == [(1, "failed"), (2, "failed"), (3, "failed")], chaos.explain([run_id])
    assert all("not JSON" in (c.error or "") for c in chaos.ledger(run_id))
    assert "no valid plan after 3 attempts" in (chaos.run_row(run_id).error or "")
    _diagnostic(chaos, run_id)
    chaos.assert_exactly_once([run_id])


def test_a_server_killed_mid_call_and_restarted_leaves_the_run_ended_and_explained(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "oc-compat dies mid-call"
    run_id = chaos.submit("Add a note to README.md [oc:slow=2000]")
    scenario.track(run_id)
    first = title("CompileST", run_id, 1)
    wait_until(lambda: chaos.prompts_by_title()[first], 20, f"{first!r} to reach oc-compat")
    wait_until(chaos.in_flight_at_oc, 5, "the prompt to be held open", detail=chaos.logs)
    chaos.kill_oc()
    chaos.start_oc()

    final = chaos.drive([run_id], 45)[run_id]
    calls = chaos.ledger(run_id, "CompileST")
    assert calls[0].status == "failed", "the cut connection fails the call in flight"
    # The restarted daemon no longer knows the sent call's session (SessionLost); a
    # blocking call would have seen its connection cut.
    assert calls[0].error_name in ("SessionLost", "OpenCodeTransientError", "OpenCodeUnreachable")
    if final == "succeeded":
        # the next attempt reached the restarted server, under its own op_key
        assert calls[-1].status == "succeeded"
        assert len(branch_commits(chaos.repo_of(run_id), run_id)) == 1
    else:
        # every attempt was spent while the server was still down: fail closed
        assert final == "failed", chaos.explain([run_id])
        assert "no valid plan after 3 attempts" in (chaos.run_row(run_id).error or "")
        _diagnostic(chaos, run_id)
    scenario.note = f"{final}: CompileST calls {[(c.attempt, c.status) for c in calls]}"
    chaos.assert_exactly_once([run_id])


def test_a_run_failed_by_a_daemon_outage_is_retried_by_the_operator_and_succeeds(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "daemon down past every attempt, then the operator retries"
    chaos.kill_oc()  # down before the run starts, and longer than every attempt takes
    run_id = chaos.submit("Add a note to README.md")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"failed"}, deadline_s=60)
    down = [(c.attempt, c.status) for c in chaos.ledger(run_id, "CompileST")]
    assert [a for a, _ in down] == [1, 2, 3], chaos.explain([run_id])
    assert all(status == "failed" for _, status in down)
    assert "the provider failed every attempt" in (chaos.run_row(run_id).error or "")

    refused = chaos.http.post(f"/runs/{run_id}/retry")  # still down: fails again, fine
    assert refused.status_code == 200, refused.text
    chaos.wait_status(run_id, {"failed"}, deadline_s=60)

    chaos.start_oc()  # the daemon is back
    resumed = chaos.http.post(f"/runs/{run_id}/retry")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["stepId"] == "CompileST"
    assert resumed.json()["round"] == 3
    final = chaos.drive([run_id], 60)[run_id]
    assert final == "succeeded", chaos.explain([run_id])

    calls = chaos.ledger(run_id, "CompileST")
    assert [c.attempt for c in calls] == [1, 2, 3, 4, 5, 6, 7], "each retry: new attempts"
    assert calls[-1].status == "succeeded"
    row = chaos.run_row(run_id)
    assert row.error is None
    with chaos.engine.connect() as conn:
        counted = conn.execute(text(RETRIES_EXPLAINED), {"r": run_id}).one()
    assert counted.retry_count == counted.explained, "the triage query explains every retry"
    assert counted.retry_count >= 2, "both operator retries are counted"
    chaos.assert_exactly_once([run_id])
    scenario.note = f"CompileST calls {[(c.attempt, c.status) for c in calls]}"
