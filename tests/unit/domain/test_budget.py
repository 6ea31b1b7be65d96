"""Budgets (pure): amounts in micro-dollars, estimates, and whether a call fits."""

from __future__ import annotations

import pytest

from shared.domain.budget import (
    Budget,
    Estimate,
    Ledger,
    call_estimate,
    micro_to_usd,
    usd_to_micro,
)


def test_dollars_become_whole_micro_dollars_rounded_up() -> None:
    assert usd_to_micro(3.001) == 3_001_000
    assert usd_to_micro(0.0000001) == 1, "a reservation never undercounts"
    assert usd_to_micro(0) == 0
    assert micro_to_usd(2_500_000) == 2.5


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_unreal_amount_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        usd_to_micro(bad)


def test_a_call_reserves_the_price_times_the_token_bound() -> None:
    assert call_estimate(200_000, 15) == Estimate(usd_micro=3_000_000, tokens=200_000)
    assert call_estimate(1, 0.5) == Estimate(usd_micro=1, tokens=1)
    with pytest.raises(ValueError, match="token bound"):
        call_estimate(0, 15)


def test_a_call_fits_while_spent_reserved_and_its_estimate_stay_within_each_limit() -> None:
    estimate = Estimate(usd_micro=100, tokens=10)
    fits = Budget(Ledger(300, 100, 100), Ledger(None, 5, 5))
    assert fits.admits(estimate), "exactly at the limit fits"
    over_usd = Budget(Ledger(299, 100, 100), Ledger(None, 0, 0))
    assert not over_usd.admits(estimate)
    over_tokens = Budget(Ledger(None, 0, 0), Ledger(19, 5, 5))
    assert not over_tokens.admits(estimate)
    refusal = Budget(Ledger(299, 100, 100), Ledger(19, 5, 5)).refusal(estimate)
    assert refusal.startswith("budget: the next provider call was not sent: $0.000100 more")
    assert "10 more tokens would pass the budget of 19 (spent 5, reserved 5)" in refusal


def test_the_api_shows_dollars_and_tokens_with_what_remains() -> None:
    shown = Budget(Ledger(3_000_000, 1_000_000, 500_000), Ledger(None, 7, 3)).to_json()
    assert shown == {
        "usd": {"limit": 3.0, "spent": 1.0, "reserved": 0.5, "remaining": 1.5},
        "tokens": {"limit": None, "spent": 7, "reserved": 3, "remaining": None},
    }
