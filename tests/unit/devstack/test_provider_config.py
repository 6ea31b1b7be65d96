"""The daemon's provider config: every kind wired as opencode 1.18.33 takes it, the key
named (``{env:VAR}``) and never written, the prices declared, bad settings refused."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from devstack.oc_daemon.cli import oc
from devstack.oc_daemon.config import (
    NPM,
    SCRIPTED_PRICES,
    Prices,
    ProviderConfigError,
    ProviderKind,
    ProviderSpec,
    global_config,
    scripted_provider,
)
from shared.model_in_use import STAND_IN_PROVIDER_NAME

KEY_VAR = "KODO_TEST_PROVIDER_KEY"
KEY = "sk-this-must-never-be-written-anywhere"
PRICES = Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
ENV = {KEY_VAR: KEY}


def _spec(kind: ProviderKind, **extra: object) -> ProviderSpec:
    given: dict[str, object] = {"api_key_env": KEY_VAR, "model_id": "m-1", "prices": PRICES}
    if kind is ProviderKind.OPENAI_COMPATIBLE:
        given["base_url"] = "https://llm.example/v1/"
    given.update(extra)
    return ProviderSpec(kind=kind, **given)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_every_kind_names_its_package_its_model_and_prices_and_only_itself(
    kind: ProviderKind,
) -> None:
    spec = _spec(kind)
    spec.check(ENV)
    config = global_config(spec)
    assert config["enabled_providers"] == [kind.value]
    assert config["model"] == config["small_model"] == f"{kind.value}/m-1"
    provider = config["provider"][kind.value]
    assert provider["npm"] == NPM[kind]
    model = provider["models"]["m-1"]
    assert model["cost"] == {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
    assert model["tool_call"] is True
    assert provider["name"] != STAND_IN_PROVIDER_NAME


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_the_key_is_named_for_the_daemon_to_substitute_never_written(kind: ProviderKind) -> None:
    config = global_config(_spec(kind))
    options = config["provider"][kind.value]["options"]
    assert options["apiKey"] == "{env:" + KEY_VAR + "}"
    assert KEY not in json.dumps(config)
    assert KEY not in _spec(kind).describe()


def test_base_urls_the_kinds_default_or_the_given_one_without_a_trailing_slash() -> None:
    def base(spec: ProviderSpec) -> str | None:
        return global_config(spec)["provider"][spec.provider]["options"].get("baseURL")

    assert base(_spec(ProviderKind.OPENAI_COMPATIBLE)) == "https://llm.example/v1"
    assert base(_spec(ProviderKind.OLLAMA)) == "http://127.0.0.1:11434/v1"
    assert base(_spec(ProviderKind.ANTHROPIC)) is None  # the SDK's api.anthropic.com
    assert base(_spec(ProviderKind.ANTHROPIC, base_url="http://127.0.0.1:9/v1")) == (
        "http://127.0.0.1:9/v1"
    )


def test_a_provider_id_can_be_chosen() -> None:
    config = global_config(_spec(ProviderKind.OPENROUTER, provider_id="my-router"))
    assert config["enabled_providers"] == ["my-router"]
    assert config["provider"]["my-router"]["npm"] == "@openrouter/ai-sdk-provider"


def test_the_scripted_stand_in_says_so_and_keeps_its_prices() -> None:
    spec = scripted_provider("http://127.0.0.1:1/v1")
    spec.check({})
    config = global_config(spec)
    provider = config["provider"]["kodo"]
    assert provider["name"] == STAND_IN_PROVIDER_NAME
    assert provider["models"]["kodo-scripted"]["cost"] == SCRIPTED_PRICES.as_config()
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert "STAND-IN" in spec.describe()
    messages = scripted_provider("http://127.0.0.1:1/v1", kind=ProviderKind.ANTHROPIC)
    assert global_config(messages)["provider"]["kodo"]["npm"] == "@ai-sdk/anthropic"


@pytest.mark.parametrize(
    ("spec", "env", "rule"),
    [
        (_spec(ProviderKind.ANTHROPIC, api_key_env=None), ENV, "needs --api-key-env"),
        (_spec(ProviderKind.OPENAI), {}, "not set"),
        (_spec(ProviderKind.OPENAI), {KEY_VAR: "  "}, "not set"),
        (
            _spec(ProviderKind.OPENAI, api_key_env="OPENCODE_KEY"),
            {"OPENCODE_KEY": "k"},
            "OPENCODE_",
        ),
        (_spec(ProviderKind.OPENAI, api_key_env="$(rm -rf)"), ENV, "not a variable name"),
        (_spec(ProviderKind.OPENAI_COMPATIBLE, base_url=None), ENV, "needs --base-url"),
        (_spec(ProviderKind.OPENAI, base_url="file:///etc"), ENV, "not http"),
        (_spec(ProviderKind.OPENAI, provider_id="kodo"), ENV, "reserved"),
        (_spec(ProviderKind.OPENAI, model_id=" "), ENV, "non-empty"),
        (_spec(ProviderKind.OPENAI, output_limit=0), ENV, "positive"),
    ],
)
def test_bad_settings_are_refused_naming_the_rule(
    spec: ProviderSpec, env: dict[str, str], rule: str
) -> None:
    with pytest.raises(ProviderConfigError, match=rule.replace("$", r"\$").replace("(", r"\(")):
        spec.check(env)


def test_a_local_server_may_go_without_a_key() -> None:
    spec = _spec(ProviderKind.OLLAMA, api_key_env=None)
    spec.check({})
    assert "apiKey" not in global_config(spec)["provider"]["ollama"]["options"]


def test_prices_are_all_four_each_once_and_never_negative() -> None:
    items = ["input=3", "output=15", "cache-read=0.3", "cache_write=3.75"]
    assert Prices.parse(items) == PRICES
    with pytest.raises(ProviderConfigError, match="cache_write=USD"):
        Prices.parse(items[:3])
    with pytest.raises(ProviderConfigError, match="twice"):
        Prices.parse([*items, "input=1"])
    with pytest.raises(ProviderConfigError, match=">= 0"):
        Prices.parse(["input=-1", *items[1:]])
    with pytest.raises(ProviderConfigError, match="not a number"):
        Prices.parse(["input=cheap", *items[1:]])
    with pytest.raises(ProviderConfigError, match="KEY one of"):
        Prices.parse([*items, "reasoning=2"])


def test_cost_is_prices_times_tokens_with_reasoning_billed_as_output() -> None:
    cost = PRICES.cost(input=1000, output=200, reasoning=50, cache_read=400, cache_write=100)
    assert cost == pytest.approx((1000 * 3 + 250 * 15 + 400 * 0.3 + 100 * 3.75) / 1e6)


def test_kodo_oc_config_prints_the_config_naming_the_key_variable_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)
    argv = ["config", "--provider", "anthropic", "--model", "claude-x", "--api-key-env", KEY_VAR]
    argv += [f"--price={k}={v}" for k, v in PRICES.as_config().items()]
    result = CliRunner().invoke(oc, argv)
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["provider"]["anthropic"]["options"]["apiKey"] == "{env:" + KEY_VAR + "}"
    assert KEY not in result.output
    monkeypatch.delenv(KEY_VAR)
    unset = CliRunner().invoke(oc, argv)
    assert unset.exit_code == 2
    assert f"--api-key-env {KEY_VAR}: that variable is not set" in unset.output
    mixed = CliRunner().invoke(oc, ["config", "--llm-url", "http://127.0.0.1:1/v1", *argv[3:5]])
    assert mixed.exit_code == 2
    assert "--model: for a real provider, not the scripted stand-in" in mixed.output
