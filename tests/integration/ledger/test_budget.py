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
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import OpenCodeCall, Run
from shared.db.repos.ledger import AttemptPromptChanged
from shared.domain.budget import BudgetExceeded, Estimate
from shared.domain.vocab import (
    CUT_SHORT_ERRORS,
    CUT_SHORT_LATE_ERRORS,
    CUT_SHORT_STATUSES,
    CallStatus,
)
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
    with sessions() as s:
        kept = s.execute(
            select(func.sum(OpenCodeCall.spent_usd_micro)).where(OpenCodeCall.run_id == run.id)
        ).scalar_one()
    assert kept == final.spent_usd_micro, "each call keeps what its settle spent"


def test_a_token_budget_refuses_the_call_and_claims_nothing(
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
    assert money(sessions, run.id).reserved_tokens == ESTIMATE.tokens, "nor reserved"


def test_a_claim_replayed_once_its_budget_is_full_reads_its_row_back(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """A redelivery replays a call it claimed before: the budget that call filled does
    not refuse its own replay, which reserves nothing again and reads the row."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=ESTIMATE.tokens)  # room for one
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    first = call(run.id, 1)
    assert ledger.claim(first, {}, lease=None)

    won, found = ledger.claim_or_read(first, {}, lease=None)

    assert not won
    assert found is not None
    record, _age = found
    assert (record.op_key, record.status) == (first.op_key, CallStatus.CLAIMED)
    assert money(sessions, run.id).reserved_tokens == ESTIMATE.tokens, "reserved once"


def test_an_attempt_asked_again_in_other_words_is_refused_as_such_with_its_budget_full(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """The attempt's own refusal comes before the budget's: the ledger holds attempt 1
    under another prompt, whatever room is left."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=ESTIMATE.tokens)
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    assert ledger.claim(call(run.id, 1), {}, lease=None)
    reworded = StructuredCall(run.id, "CompileST", 1, "plan", "other words", {}, "/w")

    with pytest.raises(AttemptPromptChanged):
        ledger.claim(reworded, {}, lease=None)


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


def _settle(
    sessions: sessionmaker[Session],
    run_id: str,
    status: CallStatus,
    error_name: str | None,
    usage: dict[str, float | int],
    *,
    session_id: str | None = "ses_1",
) -> OpenCodeCall:
    """Claim one call of ``run_id`` (reserving ESTIMATE; its prompt's session made
    unless ``session_id`` is None) and end it; its row, settled. A late status ends it
    from ``unknown``, as a claimant does after another delivery declared it so."""
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    c = call(run_id, 1)
    session = None if session_id is None else (session_id, None)
    assert ledger.claim(c, {}, lease=None, session=session)
    came_from = CallStatus.CLAIMED
    if status.is_late:
        with sessions.begin() as s:
            s.execute(
                update(OpenCodeCall).where(OpenCodeCall.op_key == c.op_key).values(status="unknown")
            )
        came_from = CallStatus.UNKNOWN
    outcome = CallOutcome(status, NOW, duration_ms=1, usage=usage, error_name=error_name)
    assert ledger.finish(c.op_key, outcome, from_status=came_from)
    with sessions() as s:
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == c.op_key)).scalar_one()
        s.expunge(row)
        return row


CUT_SHORT = (
    [(status, None) for status in sorted(CUT_SHORT_STATUSES)]
    + [(CallStatus.FAILED, name) for name in sorted(CUT_SHORT_ERRORS)]
    + [(CallStatus.FAILED_LATE, name) for name in sorted(CUT_SHORT_LATE_ERRORS)]
)
BELOW = {"cost_usd": 0.0005, "total_tokens": 100}  # 500 micro-dollars: under ESTIMATE
ABOVE = {"cost_usd": 0.005, "total_tokens": 2_500}  # over ESTIMATE in both dimensions


@pytest.mark.parametrize(("status", "error_name"), CUT_SHORT)
def test_a_call_cut_short_spends_its_reservation_when_its_totals_are_less(
    db: Session, sessions: sessionmaker[Session], status: CallStatus, error_name: str | None
) -> None:
    """The daemon's totals miss the step the turn was cut in: a model that stalls its
    last step until the deadline (or past a cancel) is billed the bound it was given."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    row = _settle(sessions, run.id, status, error_name, BELOW)
    assert (row.spent_usd_micro, row.spent_tokens) == (3_000, 1_000)
    assert row.usage == BELOW, "the daemon's totals are kept as they were read"
    after = money(sessions, run.id)
    assert (after.spent_usd_micro, after.spent_tokens) == (3_000, 1_000)
    assert (after.reserved_usd_micro, after.reserved_tokens) == (0, 0)


@pytest.mark.parametrize(("status", "error_name"), CUT_SHORT)
def test_a_call_cut_past_its_reservation_spends_its_totals_and_its_last_step_again(
    db: Session, sessions: sessionmaker[Session], status: CallStatus, error_name: str | None
) -> None:
    """The step the cut stopped had resent the conversation (about the last counted
    step's context) and is in no totals: it is spent as that step was (red-team
    helper-129; before, a turn past its reservation spent its totals alone)."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    usage = {**ABOVE, "last_step_tokens": 1_500, "last_step_cost_usd": 0.0025}
    row = _settle(sessions, run.id, status, error_name, usage)
    assert (row.spent_usd_micro, row.spent_tokens) == (5_000 + 2_500, 2_500 + 1_500)
    assert money(sessions, run.id).spent_usd_micro == 7_500


@pytest.mark.parametrize(("status", "error_name"), CUT_SHORT)
def test_a_cut_turn_known_by_its_totals_alone_spends_its_cut_step_within_them(
    db: Session, sessions: sessionmaker[Session], status: CallStatus, error_name: str | None
) -> None:
    """Only the session's totals read (its messages were not): the last step's context
    is within the totals and within the reservation, so the lesser is spent again."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    row = _settle(sessions, run.id, status, error_name, ABOVE)
    assert (row.spent_usd_micro, row.spent_tokens) == (5_000 + 3_000, 2_500 + 1_000)


def test_a_cut_turn_whose_totals_and_last_step_stay_under_its_reservation_spends_that(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    usage = {**BELOW, "last_step_tokens": 60, "last_step_cost_usd": 0.0003}
    row = _settle(sessions, run.id, CallStatus.TIMED_OUT, None, usage)
    assert (row.spent_usd_micro, row.spent_tokens) == (3_000, 1_000)


def test_a_turn_that_ended_is_not_spent_its_last_step_again(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    usage = {**ABOVE, "last_step_tokens": 1_500, "last_step_cost_usd": 0.0025}
    row = _settle(sessions, run.id, CallStatus.SUCCEEDED, None, usage)
    assert (row.spent_usd_micro, row.spent_tokens) == (5_000, 2_500)


@pytest.mark.parametrize(
    ("status", "error_name"),
    [
        (CallStatus.SUCCEEDED, None),
        (CallStatus.SUCCEEDED_LATE, None),
        (CallStatus.FAILED, "ContractViolation"),  # answered against the schema: turn ended
        (CallStatus.FAILED, "OpenCodeUnreachable"),  # never reached a daemon
        (CallStatus.FAILED, "OpenCodeTransientError"),  # a proxy's 503: never ran
        (CallStatus.FAILED_LATE, "ContractViolation"),
    ],
)
def test_a_call_whose_turn_ended_spends_its_usage_alone(
    db: Session, sessions: sessionmaker[Session], status: CallStatus, error_name: str | None
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    row = _settle(sessions, run.id, status, error_name, BELOW)
    assert (row.spent_usd_micro, row.spent_tokens) == (500, 100)
    after = money(sessions, run.id)
    assert (after.spent_usd_micro, after.reserved_usd_micro) == (500, 0)


def test_an_unsettled_call_has_no_spend_and_the_database_refuses_one(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    ledger = PostgresCallLedger(sessions, ESTIMATE)
    c = call(run.id, 1)
    assert ledger.claim(c, {}, lease=None)
    with sessions() as s:
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == c.op_key)).scalar_one()
        assert (row.spent_usd_micro, row.spent_tokens, row.settled_at) == (None, None, None)
        row.spent_usd_micro = 1
        with pytest.raises(IntegrityError, match="ck_opencode_calls_spent_when_settled"):
            s.commit()


@pytest.mark.parametrize(("status", "error_name"), CUT_SHORT)
def test_a_call_without_a_session_sent_no_prompt_and_spends_its_usage_alone(
    db: Session, sessions: sessionmaker[Session], status: CallStatus, error_name: str | None
) -> None:
    """A timeout creating the session (or in ApplyPatchST's prepare) ends the call before
    any prompt left: a slow daemon must not burn a reservation per retry."""
    run = RunFactory(budget_usd_micro=None, budget_tokens=None)
    db.commit()
    row = _settle(sessions, run.id, status, error_name, BELOW, session_id=None)
    assert (row.spent_usd_micro, row.spent_tokens) == (500, 100)
