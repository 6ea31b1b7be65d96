"""Budgets: what a run may spend, reserved before each provider call (pure).

Money is counted in micro-dollars (integers: no rounding drift over thousands of calls).
Before a call is sent, its step reserves an estimate under the run's row lock: the
model's price times a bound on the tokens one call may use (``KODO_CALL_TOKEN_BOUND``
at ``KODO_PRICE_USD_PER_MTOK``). A call whose reservation would take spent plus reserved
past the budget is never sent. When the call ends, the database settles it: the
reservation is released and the real usage (the whole turn's, as the daemon bills it) is
spent, once; a turn cut short (timed out, aborted, its daemon lost) also spends the step
it was cut in, which its totals miss, and at least its reservation (migrations 0027,
0032). While the bound holds,
the settled costs never exceed the budget, and never fall below what was charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MICRO = 1_000_000


class BudgetExceeded(Exception):
    """The next provider call would pass the run's budget: it is not sent (the claim
    that would have paid for it rolls back). The run waits for a raised budget."""

    rule = "budget"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def usd_to_micro(usd: float) -> int:
    """Whole micro-dollars, rounded up (a reservation never undercounts)."""
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"not an amount of money: {usd!r}")
    return math.ceil(round(usd * MICRO, 6))


def micro_to_usd(micro: int) -> float:
    return micro / MICRO


@dataclass(frozen=True)
class Estimate:
    """What one provider call reserves."""

    usd_micro: int
    tokens: int


def call_estimate(token_bound: int, price_usd_per_mtok: float) -> Estimate:
    """The model's price times the bound on one call's tokens."""
    if token_bound < 1 or price_usd_per_mtok < 0:
        raise ValueError("the token bound must be positive and the price not negative")
    return Estimate(usd_micro=math.ceil(token_bound * price_usd_per_mtok), tokens=token_bound)


@dataclass(frozen=True)
class Ledger:
    """One dimension of a run's budget (micro-dollars or tokens)."""

    limit: int | None  # None: no budget in this dimension
    spent: int
    reserved: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def admits(self, amount: int) -> bool:
        """Whether reserving ``amount`` more stays within the limit."""
        return self.limit is None or self.spent + self.reserved + amount <= self.limit


@dataclass(frozen=True)
class Budget:
    usd: Ledger  # in micro-dollars
    tokens: Ledger

    def admits(self, estimate: Estimate) -> bool:
        return self.usd.admits(estimate.usd_micro) and self.tokens.admits(estimate.tokens)

    def refusal(self, estimate: Estimate) -> str:
        """Why a call of ``estimate`` may not be sent (for the run's error and the page)."""
        parts = []
        if not self.usd.admits(estimate.usd_micro):
            parts.append(
                f"${micro_to_usd(estimate.usd_micro):.6f} more would pass the budget of"
                f" ${micro_to_usd(self.usd.limit or 0):.6f}"
                f" (spent ${micro_to_usd(self.usd.spent):.6f},"
                f" reserved ${micro_to_usd(self.usd.reserved):.6f})"
            )
        if not self.tokens.admits(estimate.tokens):
            parts.append(
                f"{estimate.tokens} more tokens would pass the budget of {self.tokens.limit}"
                f" (spent {self.tokens.spent}, reserved {self.tokens.reserved})"
            )
        return "budget: the next provider call was not sent: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """As the API shows it: dollars, and tokens."""

        def usd(value: int | None) -> float | None:
            return None if value is None else micro_to_usd(value)

        return {
            "usd": {
                "limit": usd(self.usd.limit),
                "spent": usd(self.usd.spent),
                "reserved": usd(self.usd.reserved),
                "remaining": usd(self.usd.remaining),
            },
            "tokens": {
                "limit": self.tokens.limit,
                "spent": self.tokens.spent,
                "reserved": self.tokens.reserved,
                "remaining": self.tokens.remaining,
            },
        }
