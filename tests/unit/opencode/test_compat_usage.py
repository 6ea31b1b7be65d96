"""The compat model bills like OpenCode maps provider usage (API.md section 3.4)."""

from __future__ import annotations

import pytest

from standins.oc_compat.shapes import SYSTEM_PROMPT_BYTES, Usage, usage_for


def test_the_capture_usage_costs_what_the_daemon_charged() -> None:
    usage = Usage(input=1034, output=49, reasoning=7, cache_read=200)
    assert usage.total == 1290
    assert usage.cost == pytest.approx(0.001166)
    assert usage.tokens()["cache"] == {"write": 0, "read": 200}


def test_input_counts_the_system_prompt_and_the_prompt_at_four_bytes_a_token() -> None:
    prompt = "x" * 4000
    usage = usage_for(0, prompt, "", "y" * 400)
    assert usage.input + usage.cache_read == (SYSTEM_PROMPT_BYTES + 4000) // 4
    assert usage.output == 100
    assert 0 < usage.reasoning < 30


def test_usage_is_a_function_of_seed_and_prompt() -> None:
    assert usage_for(3, "p", "", "a") == usage_for(3, "p", "", "a")
