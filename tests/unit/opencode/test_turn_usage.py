"""A turn's usage is the sum over its assistant messages, the reply included."""

from __future__ import annotations

from typing import Any

from shared.opencode.errors import OpenCodeServerError
from shared.opencode.messages import PromptReply
from shared.opencode.turn_inspection import Turn, sum_usage, turn_usage, usage_of


def _info(role: str, *, input: int, output: int, cost: float, read: int = 0) -> dict[str, Any]:
    tokens = {"input": input, "output": output, "reasoning": 1, "cache": {"read": read}}
    return {"role": role, "tokens": tokens, "cost": cost}


def _reply(info: dict[str, Any]) -> PromptReply:
    return PromptReply(info=info, parts=[])


def test_every_assistant_message_of_the_turn_is_billed_once() -> None:
    earlier = [
        {"info": _info("assistant", input=100, output=10, cost=0.1, read=40), "parts": []},
        {"info": _info("assistant", input=120, output=20, cost=0.2), "parts": []},
    ]
    reply = _reply(_info("assistant", input=130, output=30, cost=0.3))
    usage = turn_usage(Turn(earlier, []), reply)
    assert usage == {
        "total_tokens": (100 + 10 + 1 + 40) + (120 + 20 + 1) + (130 + 30 + 1),
        "input_tokens": 350,
        "output_tokens": 60,
        "reasoning_tokens": 3,
        "cache_read_tokens": 40,
        "cache_write_tokens": 0,
        "cost_usd": 0.6,  # not 0.6000000000000001: rounded like the daemon's own totals
    }


def test_a_message_that_is_not_the_assistants_is_not_billed() -> None:
    stray = {"info": _info("user", input=999, output=999, cost=9.0), "parts": []}
    shapeless = {"info": "not an object", "parts": []}
    reply = _reply(_info("assistant", input=5, output=5, cost=0.5))
    usage = turn_usage(Turn([stray, shapeless], []), reply)
    assert usage == usage_of(reply.info)


def test_unreadable_earlier_messages_leave_the_replys_own_usage_as_the_floor() -> None:
    reply = _reply(_info("assistant", input=7, output=3, cost=0.01))
    unreadable = Turn(OpenCodeServerError("HTTP 500", status=500), [])
    assert turn_usage(unreadable, reply) == usage_of(reply.info)


def test_nothing_summed_is_zero() -> None:
    assert sum_usage([]) == {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": 0.0,
    }
