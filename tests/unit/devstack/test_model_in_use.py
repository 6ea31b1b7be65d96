"""Saying which model is in use: read from the daemon's providers answer (hostile input),
the stand-in said plainly, and a model the daemon does not offer at our prices refused."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.oc_daemon.config import Prices, ProviderKind, ProviderSpec
from devstack.oc_daemon.daemon import DaemonError, verify_offered
from shared.model_in_use import STAND_IN_PROVIDER_NAME, describe_ids, offered

SPEC = ProviderSpec(
    kind=ProviderKind.ANTHROPIC,
    model_id="claude-x",
    prices=Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75),
    api_key_env="K",
)


def _answer(cost: dict[str, Any], npm: str = "@ai-sdk/anthropic", name: str = "x") -> object:
    model = {"id": "claude-x", "api": {"id": "claude-x", "npm": npm}, "cost": cost}
    provider = {"id": "anthropic", "name": name, "options": {"apiKey": "secret"}}
    return {"providers": [{**provider, "models": {"claude-x": model}}], "default": {}}


OUR_COST = {"input": 3, "output": 15, "cache": {"read": 0.3, "write": 3.75}}


def test_the_offered_model_is_described_with_its_package_and_prices_never_the_key() -> None:
    found = verify_offered(_answer(OUR_COST), SPEC)
    assert found.stand_in is False
    described = found.describe()
    assert described.startswith("anthropic/claude-x via @ai-sdk/anthropic, USD per 1M tokens")
    assert "secret" not in described + repr(found)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"providers": []}, "has no anthropic/claude-x"),
        ("not json object", "has no anthropic/claude-x"),
        (_answer(OUR_COST, npm="@ai-sdk/openai"), "via @ai-sdk/openai, not @ai-sdk/anthropic"),
        (_answer({**OUR_COST, "output": 2}), "prices claude-x at"),
    ],
)
def test_a_daemon_that_does_not_offer_the_configured_model_is_refused(
    answer: object, said: str
) -> None:
    with pytest.raises(DaemonError, match="must offer exactly the configured model") as caught:
        verify_offered(answer, SPEC)
    assert said in str(caught.value)


def test_the_stand_in_is_said_plainly_by_its_id_or_its_name() -> None:
    assert describe_ids("kodo", "kodo-scripted") == (
        "kodo/kodo-scripted (the SCRIPTED STAND-IN, not a real model)"
    )
    assert describe_ids("anthropic", "claude-x") == "anthropic/claude-x"
    by_name = offered(_answer(OUR_COST, name=STAND_IN_PROVIDER_NAME), "anthropic", "claude-x")
    assert by_name is not None
    assert by_name.stand_in is True
    assert "SCRIPTED STAND-IN" in by_name.describe()


@pytest.mark.parametrize(
    "answer",
    [
        {"providers": [{"id": "anthropic", "models": {"claude-x": "no"}}]},
        {"providers": [{"id": "anthropic", "models": {"claude-x": {"cost": {"input": True}}}}]},
        {"providers": "no"},
    ],
)
def test_odd_shapes_are_read_defensively(answer: object) -> None:
    found = offered(answer, "anthropic", "claude-x")
    assert found is None or (found.cost is None and found.npm is None)
