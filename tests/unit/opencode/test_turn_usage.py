"""What a call is billed: its whole turn, added up from the messages the rules read anyway.

The daemon keeps a session's totals as its messages added up (API notes: "sum the
assistant messages"); kodo sends one prompt per fresh session, so the turn's messages
give the totals without a ``GET /session/{id}`` per call. The totals stand in only
where the messages cannot be read, and the answer's own usage is the floor.
"""

from __future__ import annotations

from typing import Any

from shared.opencode.errors import OpenCodeServerError
from shared.opencode.messages import PromptReply
from shared.opencode.turn_inspection import (
    MAX_COST_USD,
    MAX_TOKENS,
    Turn,
    summed_usage,
    turn_usage,
    usage_of,
)
from tests.unit.opencode.captures import capture


def _info(inp: int, out: int, reasoning: int, read: int, cost: float) -> dict[str, Any]:
    total = inp + out + reasoning + read
    tokens = {"total": total, "input": inp, "output": out, "reasoning": reasoning}
    return {"tokens": {**tokens, "cache": {"read": read, "write": 0}}, "cost": cost}


def _reply(info: dict[str, Any]) -> PromptReply:
    return PromptReply(info={"role": "assistant", **info}, parts=[])


def test_two_steps_add_up_field_by_field_as_the_daemons_totals_do() -> None:
    first, answer = _info(1000, 40, 5, 200, 0.001), _info(1100, 60, 2, 300, 0.002)
    tokens = {"input": 2100, "output": 100, "reasoning": 7, "cache": {"read": 500, "write": 0}}
    totals = {"tokens": tokens, "cost": 0.003}
    summed = summed_usage([first, answer])
    assert {k: v for k, v in summed.items() if k != "cost_usd"} == {
        k: v for k, v in usage_of(totals).items() if k != "cost_usd"
    }
    assert summed["cost_usd"] == usage_of(totals)["cost_usd"] == 0.003
    assert summed["total_tokens"] == 2707


def test_one_step_turn_is_billed_its_answer_which_is_the_captured_message() -> None:
    answer = capture("prompt.structured.response.json")["info"]
    assert summed_usage([answer]) == usage_of(answer)
    assert summed_usage([answer])["total_tokens"] == answer["tokens"]["total"]


def test_a_readable_turn_is_billed_its_messages_not_its_last_one_alone() -> None:
    step, answer = _info(800, 90, 0, 0, 0.004), _info(20, 10, 0, 0, 0.001)
    turn = Turn(earlier=[{"info": step, "parts": []}], children=[])
    usage = turn_usage(turn, _reply(answer))
    assert (usage["total_tokens"], usage["input_tokens"]) == (920, 820)
    assert usage["cost_usd"] == 0.005


def test_a_read_turn_names_its_last_counted_step_for_the_step_a_cut_would_stop() -> None:
    """The settle spends it again for a turn cut short (migration 0032): the cut step
    resent about that context, and the daemon writes the cut message with tokens 0."""
    first, second = _info(800, 90, 0, 0, 0.004), _info(900, 50, 0, 100, 0.006)
    cut = {"tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {}}, "cost": 0}
    earlier = [{"info": first, "parts": []}, {"info": second, "parts": []}]
    usage = turn_usage(Turn(earlier=earlier, children=[]), _reply(cut))
    assert (usage["last_step_tokens"], usage["last_step_cost_usd"]) == (1050, 0.006)
    assert usage["total_tokens"] == 890 + 1050


def test_a_turn_that_counted_no_step_or_was_not_read_names_no_last_step() -> None:
    nothing = {"tokens": {}, "cost": 0}
    assert "last_step_tokens" not in turn_usage(Turn(earlier=[], children=[]), _reply(nothing))
    unread = OpenCodeServerError("HTTP 500", status=500)
    totals = {"tokens": {"input": 820}, "cost": 0.005}
    from_totals = turn_usage(Turn(earlier=unread, children=[], session=totals), _reply(nothing))
    assert "last_step_tokens" not in from_totals


def test_an_unreadable_turn_is_billed_its_sessions_totals_else_its_answer() -> None:
    unread = OpenCodeServerError("HTTP 500", status=500)
    answer = _info(20, 10, 0, 0, 0.001)
    totals = {"tokens": {"input": 820, "output": 100, "reasoning": 0, "cache": {}}, "cost": 0.005}
    with_totals = Turn(earlier=unread, children=[], session=totals)
    assert turn_usage(with_totals, _reply(answer))["total_tokens"] == 920
    assert with_totals.usage_known
    without = Turn(earlier=unread, children=[])
    assert turn_usage(without, _reply(answer))["total_tokens"] == 30
    assert not without.usage_known


def test_counts_the_daemon_reports_are_read_not_trusted() -> None:
    """A negative count, a boolean or a string is no count: read as 0, alike by the
    ledger's usage and the reply's tokens; a total that is no count is summed."""
    tokens = {"total": -5, "input": 100, "output": True, "reasoning": "7"}
    info = {"tokens": {**tokens, "cache": {"read": -3, "write": 4}}, "cost": 0.25}
    usage = usage_of(info)
    assert usage == {
        "total_tokens": 104,  # cache writes are tokens the provider took in
        "input_tokens": 100,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 4,
        "cost_usd": 0.25,
    }
    assert _reply(info).tokens.total == usage["total_tokens"]


def test_a_negative_cost_cancels_nothing_the_turn_spent() -> None:
    """A -5.0 answer beside a $5 tool step had summed to $0 (red-team helper-122)."""
    step = {"tokens": {"input": 10}, "cost": 5.0}
    answer = {"tokens": {"input": 1}, "cost": -5.0}
    assert summed_usage([step, answer])["cost_usd"] == 5.0
    assert usage_of({"cost": True})["cost_usd"] == 0.0


def test_a_total_below_its_own_counts_is_charged_the_counts() -> None:
    said = usage_of({"tokens": {"total": 2, "input": 1_000_000, "output": 20}})
    assert said["total_tokens"] == 1_000_020
    assert usage_of({"tokens": {"total": 50, "input": 10}})["total_tokens"] == 50


def test_usage_is_bounded_where_the_ledger_could_not_hold_it() -> None:
    """Past any budget, and a thousand messages of it still fit a bigint sum."""
    huge = usage_of({"tokens": {"total": 10**19, "input": 10**19}, "cost": 1e13})
    assert huge["total_tokens"] == huge["input_tokens"] == MAX_TOKENS
    assert huge["cost_usd"] == MAX_COST_USD
    summed = summed_usage([{"tokens": {"input": MAX_TOKENS}, "cost": MAX_COST_USD}] * 3)
    assert (summed["total_tokens"], summed["cost_usd"]) == (MAX_TOKENS, MAX_COST_USD)
