"""Budgets on real Postgres: reservations race under the run's row lock, and the database
settles each call once, so the settled costs of a run never pass its budget.

Many threads claim calls of one run at once (distinct attempts, and twins of one op_key:
racing deliveries); some claimed calls are never finished (their worker was killed
mid-call: the reservation stays held); the rest end with real usage at most the
estimate. Every dimension is checked against the budget after each phase.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import OpenCodeCall, Run
from shared.domain.budget import BudgetExceeded, Estimate
from shared.domain.vocab import CallStatus
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallOutcome, StructuredCall
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

ESTIMATE = Estimate(usd_micro=3_000, tokens=1_000)
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def call(run_id: str, attempt: int) -> StructuredCall:
    return StructuredCall(run_id, "CompileST", attempt, "plan", f"prompt {attempt}", {}, "/w")


def race(ledger: PostgresCallLedger, calls: list[StructuredCall]) -> tuple[list[str], int]:
    """Claim every call from its own thread at once: (won op_keys, budget refusals)."""
    won: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(calls))

    def claim(c: StructuredCall) -> None:
        start.wait()
        try:
            ok = ledger.claim(c, {"prompt": c.prompt}, lease=None)
        except BudgetExceeded:
            with lock:
                refused.append(c.attempt)
            return
        if ok:
            with lock:
                won.append(c.op_key)

    threads = [threading.Thread(target=claim, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, len(refused)


def money(sessions: sessionmaker[Session], run_id: str) -> Run:
    with sessions() as s:
        run = s.execute(select(Run).where(Run.id == run_id)).scalar_one()
        s.expunge(run)
        return run


def test_racing_claims_never_reserve_past_the_budget_and_settled_costs_stay_within_it(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=20_000, budget_tokens=None)  # room for 6 estimates
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    calls = [call(run.id, n) for n in range(1, 25)]
    twins = calls[:8]  # racing deliveries of the same attempts (same op_keys)

    won, refused = race(ledger, calls + twins)

    assert len(won) == 6, "exactly as many calls as the budget holds estimates"
    assert refused >= len(calls) - 6
    after = money(sessions, run.id)
    assert after.reserved_usd_micro == 6 * ESTIMATE.usd_micro <= 20_000
    assert after.spent_usd_micro == 0

    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    killed = won[:2]  # their workers died mid-call: never finished, still reserved
    for op_key in won[2:]:
        cost = rng.randint(0, ESTIMATE.usd_micro)
        usage = {"cost_usd": cost / 1_000_000, "total_tokens": rng.randint(0, 1000)}
        finished = ledger.finish(
            op_key, CallOutcome(CallStatus.SUCCEEDED, NOW, duration_ms=5, usage=usage)
        )
        assert finished
        assert not ledger.finish(  # a second record of the same call settles nothing
            op_key, CallOutcome(CallStatus.SUCCEEDED, NOW, duration_ms=5, usage=usage)
        )
    settled = money(sessions, run.id)
    assert settled.reserved_usd_micro == len(killed) * ESTIMATE.usd_micro
    assert settled.spent_usd_micro + settled.reserved_usd_micro <= 20_000

    more, _ = race(ledger, [call(run.id, n) for n in range(100, 112)])

    final = money(sessions, run.id)
    assert final.spent_usd_micro + final.reserved_usd_micro <= 20_000, "never past the budget"
    assert len(more) == (20_000 - settled.spent_usd_micro - settled.reserved_usd_micro) // 3_000
    with sessions() as s:
        spent = sum(
            round((c.usage or {}).get("cost_usd", 0) * 1_000_000)
            for c in s.execute(select(OpenCodeCall).where(OpenCodeCall.run_id == run.id)).scalars()
            if c.settled_at is not None
        )
    assert final.spent_usd_micro == spent, "spent is the sum of the settled calls' costs"


def test_a_token_budget_refuses_the_call_and_rolls_its_claim_back(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=1_500)
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    assert ledger.claim(call(run.id, 1), {}, lease=None)

    with pytest.raises(BudgetExceeded, match="1000 more tokens would pass the budget of 1500"):
        ledger.claim(call(run.id, 2), {}, lease=None)

    with sessions() as s:
        attempts = s.execute(
            select(OpenCodeCall.attempt).where(OpenCodeCall.run_id == run.id)
        ).scalars()
        assert list(attempts) == [1], "the refused call was never claimed, so never sent"


def test_a_call_that_fails_without_usage_releases_its_reservation(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=3_000)
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    first = call(run.id, 1)
    assert ledger.claim(first, {}, lease=None)
    ledger.finish(
        first.op_key,
        CallOutcome(CallStatus.FAILED, NOW, duration_ms=1, error_name="OpenCodeUnreachable"),
    )
    assert money(sessions, run.id).reserved_usd_micro == 0
    assert ledger.claim(call(run.id, 2), {}, lease=None), "the budget is whole again"
