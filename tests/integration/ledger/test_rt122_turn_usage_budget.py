"""A turn's usage as the daemon relays it can make the run's budget settle less than the
turn was billed (red-team helper-122).

kodo bills a call its whole turn: :func:`shared.opencode.turn_inspection.turn_usage`
adds up the turn's assistant messages (``summed_usage``), each read by ``usage_of``.
Token counts are checked there (a negative, boolean or string count reads 0), but:

1. ``cost`` is taken as any finite number, negative included, and the messages' costs
   are *summed* before the ledger's settle clamps the call's total at 0. A turn whose
   tool step was billed $5.00 and whose answer message reports ``cost: -5.0`` is
   recorded ``cost_usd: 0.0``: the run's ``spent_usd_micro`` gains nothing, and the next
   calls are admitted against a budget that was never charged. The same holds for any
   mix: a negative cost in any step offsets the real costs of the others.

2. ``tokens.total`` is believed whenever it is a positive integer, even when it is far
   below the counts it totals: ``{"total": 1, "input": 900000, "output": 100000}`` is
   recorded ``total_tokens: 1`` (the token budget is charged 1 for a million tokens).

A daemon (or the provider behind it, whose usage it maps into tokens and cost) that
reports these values spends past the run's budget while the ledger says less.

Safe outcome: a step's cost is never below 0 when added to the turn (a negative cost
reads 0, as a negative count does, or the turn is refused), and a ``total`` below the
sum of its own counts is not taken (the larger one is billed, or the turn is refused):
the run settles at least what the daemon's own positive figures say was spent.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import SystemClock
from shared.db.models import OpenCodeCall, Run
from shared.domain.budget import Estimate
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallFailed, StructuredCall
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef
from tests.factories import RunFactory
from tests.fakes.agent import FakeAgent, ScriptedTurn

pytestmark = pytest.mark.integration

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
ESTIMATE = Estimate(usd_micro=10_000, tokens=10_000)


class RelayingDaemon(FakeAgent):
    """A daemon whose turn had one tool step before the answer, with ``step`` usage."""

    def __init__(self, step: dict[str, Any], answer_tokens: dict[str, Any], cost: float) -> None:
        super().__init__(ScriptedTurn(answer=ANSWER, message_tokens=answer_tokens, cost=cost))
        self.step = step

    def earlier_turn_messages(self, session_id: str, **kw: Any) -> list[dict[str, Any]]:
        parent = self.replies[session_id].info["parentID"] if session_id in self.replies else None
        parent = parent or kw.get("prompt_id")
        info = {"role": "assistant", "parentID": parent, **self.step}
        return [{"info": info, "parts": []}]


def _run_one_call(agent: FakeAgent, sessions: sessionmaker[Session], run_id: str) -> None:
    calls = ExactlyOnceCalls(
        agent,
        PostgresCallLedger(sessions, ESTIMATE),
        SystemClock(),
        model=ModelRef("kodo", "kodo-scripted"),
        timeout_s=5.0,
    )
    call = StructuredCall(run_id, "DecideST", 1, "plan", "choose", BUILD_OUTPUT_SCHEMA, "/w")
    with contextlib.suppress(CallFailed):  # a refusal is safe too: what it settles is asserted
        calls.prompt_structured(call)


def _spent(sessions: sessionmaker[Session], run_id: str) -> tuple[int, int, dict[str, Any]]:
    with sessions() as s:
        run = s.execute(select(Run).where(Run.id == run_id)).scalar_one()
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.run_id == run_id)).scalar_one()
        return run.spent_usd_micro, run.spent_tokens, dict(row.usage or {})


def test_a_negative_cost_in_the_answer_does_not_cancel_the_cost_of_the_turns_steps(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=1_000_000, budget_tokens=None)  # a $1 budget
    db.commit()
    tool_step = {
        "tokens": {"input": 900_000, "output": 100_000, "reasoning": 0, "cache": {}},
        "cost": 5.0,  # the step the provider billed: five times the run's whole budget
    }
    answer_tokens = {"input": 10, "output": 10, "reasoning": 0, "cache": {}}
    agent = RelayingDaemon(tool_step, answer_tokens, cost=-5.0)

    _run_one_call(agent, sessions, run.id)

    usd, _tokens, usage = _spent(sessions, run.id)
    assert usd >= 5_000_000, (
        f"the turn's tool step cost $5.00, yet the run settled {usd} micro-dollars"
        f" (call usage recorded: cost_usd={usage.get('cost_usd')!r}): a negative cost in"
        " one message offset the real cost of another (budget bypass)"
    )


def test_a_total_below_its_own_counts_is_not_what_the_token_budget_is_charged(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(budget_usd_micro=None, budget_tokens=50_000)
    db.commit()
    tool_step = {
        "tokens": {"total": 1, "input": 900_000, "output": 100_000, "reasoning": 0, "cache": {}},
        "cost": 0.0,
    }
    answer_tokens = {"total": 1, "input": 10, "output": 10, "reasoning": 0, "cache": {}}
    agent = RelayingDaemon(tool_step, answer_tokens, cost=0.0)

    _run_one_call(agent, sessions, run.id)

    _usd, spent_tokens, usage = _spent(sessions, run.id)
    assert spent_tokens >= 1_000_000, (
        f"the turn used 1,000,020 tokens by its own counts, yet the run settled"
        f" {spent_tokens} (call usage recorded: total_tokens={usage.get('total_tokens')!r},"
        f" input_tokens={usage.get('input_tokens')!r}): a token budget of 50,000 was"
        " passed twenty times while the ledger says it was not"
    )


@pytest.mark.parametrize(
    ("step_tokens", "step_cost"),
    [(10**19, 0.0), (10, 1e13)],
    ids=["tokens-past-bigint", "cost-past-bigint-micro-dollars"],
)
def test_a_usage_past_what_the_ledger_holds_ends_the_call_recorded_not_a_database_error(
    db: Session, sessions: sessionmaker[Session], step_tokens: int, step_cost: float
) -> None:
    """3. A count or a cost the settle cannot hold (``bigint``: 9.2e18 tokens, or
    $9.2e12 in micro-dollars) is read as a number by ``usage_of`` and recorded; the
    settle trigger (migration 0027's ``::bigint`` casts) then raises
    ``NumericValueOutOfRange`` inside the ``finish`` statement. ``prompt_structured``
    raises a raw ``DataError`` (the step "crashes" with ``DataError: bigint out of
    range``, no rule named), the row is left ``claimed`` with its session and
    reservation (never settled, never deleted from the daemon).

    Safe outcome: the call ends recorded (refused under a named rule, or billed at
    least its reservation), the caller gets a CallFailed, not a database error."""
    run = RunFactory(budget_usd_micro=1_000_000, budget_tokens=None)
    db.commit()
    step = {"tokens": {"input": step_tokens, "output": 0, "reasoning": 0, "cache": {}}}
    agent = RelayingDaemon(
        {**step, "cost": step_cost}, {"input": 1, "output": 1, "reasoning": 0, "cache": {}}, 0.0
    )
    raised: BaseException | None = None
    try:
        _run_one_call(agent, sessions, run.id)
    except Exception as exc:
        raised = exc
    with sessions() as s:
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.run_id == run.id)).scalar_one()
        status, settled = row.status, row.settled_at
    assert raised is None, f"the call ended in {type(raised).__name__}: {str(raised)[:160]}"
    assert settled is not None, f"the call was left {status!r}, never settled"
    assert agent.deleted, "the call's session was never deleted from the daemon"
