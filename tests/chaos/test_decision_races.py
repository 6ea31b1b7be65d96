"""Concurrent decisions on one plan: one approval row, one dispatch, one consistent outcome."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from functools import partial

import httpx
import pytest
from sqlalchemy import text

from tests.chaos.conftest import Scenario
from tests.chaos.harness import Chaos, branch_commits

pytestmark = pytest.mark.chaos


def _all_at_once(calls: list[Callable[[], httpx.Response]]) -> list[int]:
    """Start every call on its own thread behind one barrier; their HTTP statuses in order."""
    barrier = threading.Barrier(len(calls))
    statuses: list[int] = [0] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        statuses[i] = calls[i]().status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def _waiting_run(chaos: Chaos, scenario: Scenario) -> str:
    run_id = chaos.submit("Add a note to README.md")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"waiting_input"}, deadline_s=30)
    return run_id


def test_the_same_approval_posted_fifty_times_at_once_is_recorded_and_dispatched_once(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "same approval x50 concurrently"
    run_id = _waiting_run(chaos, scenario)
    digest = chaos.http.get(f"/runs/{run_id}/plan").json()["planSha256"]
    clients = [
        httpx.Client(base_url=chaos.http.base_url, headers=chaos.http.headers) for _ in range(50)
    ]
    try:
        statuses = _all_at_once(
            [
                partial(c.post, f"/runs/{run_id}/approve-plan", json={"plan_sha256": digest})
                for c in clients
            ]
        )
    finally:
        for c in clients:
            c.close()
    assert Counter(statuses) == {200: 50}, "a repeated identical decision is accepted again"

    chaos.wait_status(run_id, {"succeeded"}, deadline_s=45)
    with chaos.engine.connect() as conn:
        approvals = (
            conn.execute(
                text("SELECT decision FROM app.plan_approvals WHERE run_id = :r"), {"r": run_id}
            )
            .scalars()
            .all()
        )
    assert approvals == ["approved"]
    assert chaos.step_run(run_id, "ApplyPatchST").deliveries == 1, "dispatched exactly once"
    assert [c.attempt for c in chaos.ledger(run_id, "ApplyPatchST")] == [1]
    assert len(branch_commits(chaos.repo_of(run_id), run_id)) == 1
    chaos.assert_exactly_once([run_id])


def test_approve_racing_reject_leaves_one_decision_and_its_outcome(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "approve racing reject"
    outcomes = Counter[str]()
    for _ in range(4):
        run_id = _waiting_run(chaos, scenario)
        approve, reject = _all_at_once(
            [
                partial(chaos.approve, run_id),
                partial(chaos.http.post, f"/runs/{run_id}/reject-plan", json={}),
            ]
        )
        assert sorted((approve, reject)) == [200, 409], (approve, reject)
        final = chaos.drive([run_id], 45, approve=False)[run_id]
        winner = "approved" if approve == 200 else "rejected"
        outcomes[winner] += 1
        with chaos.engine.connect() as conn:
            decisions = (
                conn.execute(
                    text("SELECT decision FROM app.plan_approvals WHERE run_id = :r"), {"r": run_id}
                )
                .scalars()
                .all()
            )
        assert decisions == [winner]
        assert final == ("succeeded" if winner == "approved" else "rejected")
        commits = branch_commits(chaos.repo_of(run_id), run_id)
        assert len(commits) == (1 if winner == "approved" else 0)
    scenario.note = dict(outcomes).__repr__()
    chaos.assert_exactly_once(scenario.run_ids)


def test_approve_racing_reject_and_cancel_ends_in_one_consistent_state(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "approve racing reject and cancel"
    probe = _waiting_run(chaos, scenario)
    cancelled = chaos.http.post(f"/runs/{probe}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert chaos.drive([probe], 10, approve=False)[probe] == "cancelled"
    outcomes = Counter[str]()
    for _ in range(4):
        run_id = _waiting_run(chaos, scenario)
        approve, reject, cancel = _all_at_once(
            [
                partial(chaos.approve, run_id),
                partial(chaos.http.post, f"/runs/{run_id}/reject-plan", json={}),
                partial(chaos.http.post, f"/runs/{run_id}/cancel", json={}),
            ]
        )
        final = chaos.drive([run_id], 45, approve=False)[run_id]
        outcomes[final] += 1
        with chaos.engine.connect() as conn:
            decisions = (
                conn.execute(
                    text("SELECT decision FROM app.plan_approvals WHERE run_id = :r"), {"r": run_id}
                )
                .scalars()
                .all()
            )
        assert len(decisions) <= 1, decisions
        assert reject in (200, 409)
        assert approve in (200, 409)
        assert cancel in (200, 409)
        commits = branch_commits(chaos.repo_of(run_id), run_id)
        if final == "rejected":
            assert (reject, decisions) == (200, ["rejected"])
            assert approve == 409
            assert cancel == 409
            assert commits == []
        elif final == "succeeded":
            assert (approve, decisions) == (200, ["approved"])
            assert reject == 409
            assert cancel == 409, "a cancel that lost to approve must not report success"
            assert len(commits) == 1
        else:
            assert final == "cancelled", final
            assert cancel == 200
            assert len(commits) <= 1, "a cancelled run may have applied its patch, once"
    scenario.note = dict(outcomes).__repr__()
    chaos.assert_exactly_once(scenario.run_ids)
