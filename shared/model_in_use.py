"""Which provider and model kodo talks to, said plainly, and whether it is the stand-in.

``kodo up``, ``kodo doctor`` and the UI header say what model the agents run on. Two
facts decide it: the ids kodo sends (``OC_PROVIDER_ID``/``OC_MODEL_ID``), and what the
daemon says about them in ``GET /config/providers``. The provider id ``kodo`` is
reserved for the scripted stand-in (``kodo oc up`` refuses it for a real provider),
and both stand-ins (the scripted LLM behind the real daemon, and the compat server)
name their provider :data:`STAND_IN_PROVIDER_NAME`; either fact makes it the stand-in.

Pure: callers fetch the daemon's answer (it is hostile input, read defensively here).
The answer's ``options`` hold the provider's substituted API key: nothing here reads,
keeps or prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STAND_IN_PROVIDER_ID = "kodo"
STAND_IN_PROVIDER_NAME = "kodo scripted stand-in (not a real model)"
STAND_IN_WORDS = "the SCRIPTED STAND-IN, not a real model"


def is_stand_in_id(provider_id: str) -> bool:
    return provider_id == STAND_IN_PROVIDER_ID


def describe_ids(provider_id: str, model_id: str) -> str:
    """``anthropic/claude-sonnet-4-5``, or ``kodo/kodo-scripted (the SCRIPTED STAND-IN...)``."""
    shown = f"{provider_id}/{model_id}"
    return f"{shown} ({STAND_IN_WORDS})" if is_stand_in_id(provider_id) else shown


@dataclass(frozen=True)
class OfferedModel:
    """The daemon's entry for one model, minus anything secret."""

    provider_id: str
    model_id: str
    provider_name: str
    npm: str | None
    cost: dict[str, float] | None  # input, output, cache_read, cache_write (USD per 1M)

    @property
    def stand_in(self) -> bool:
        return is_stand_in_id(self.provider_id) or self.provider_name == STAND_IN_PROVIDER_NAME

    def describe(self) -> str:
        shown = f"{self.provider_id}/{self.model_id}"
        if self.stand_in:
            return f"{shown} ({STAND_IN_WORDS})"
        via = f" via {self.npm}" if self.npm else ""
        if self.cost is None:
            return f"{shown}{via}, no prices configured"
        prices = ", ".join(f"{k} {v:g}" for k, v in self.cost.items())
        return f"{shown}{via}, USD per 1M tokens: {prices}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _cost(raw: object) -> dict[str, float] | None:
    if not isinstance(raw, dict):
        return None
    cache = raw.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    values = {
        "input": _number(raw.get("input")),
        "output": _number(raw.get("output")),
        "cache_read": _number(cache.get("read")),
        "cache_write": _number(cache.get("write")),
    }
    if values["input"] is None or values["output"] is None:
        return None
    return {k: (v if v is not None else 0.0) for k, v in values.items()}


def offered(providers: object, provider_id: str, model_id: str) -> OfferedModel | None:
    """The daemon's ``GET /config/providers`` entry for ``provider_id/model_id``; ``None``
    when the answer has another shape or does not offer that model."""
    listed = providers.get("providers") if isinstance(providers, dict) else None
    if not isinstance(listed, list):
        return None
    for provider in listed:
        if not isinstance(provider, dict) or provider.get("id") != provider_id:
            continue
        models = provider.get("models")
        model: Any = models.get(model_id) if isinstance(models, dict) else None
        if not isinstance(model, dict):
            return None
        api = model.get("api")
        npm = api.get("npm") if isinstance(api, dict) else None
        name = provider.get("name")
        return OfferedModel(
            provider_id=provider_id,
            model_id=model_id,
            provider_name=name if isinstance(name, str) else "",
            npm=npm if isinstance(npm, str) else None,
            cost=_cost(model.get("cost")),
        )
    return None
