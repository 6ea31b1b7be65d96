"""The daemon's global config (``OPENCODE_CONFIG``): one provider, one model, deny by default.

Everything kodo relies on is stated here rather than left to defaults: the only
provider is the one a :class:`ProviderSpec` describes (kodo's scripted LLM, or a real
provider the operator brings), with the model's prices declared, so usage and cost are
real numbers even though the models.dev catalogue is never fetched; nothing
auto-updates, shares, formats, snapshots or starts language servers; and tools that
could block a headless call or leave the worktree (``question``, ``doom_loop``,
``external_directory``, the web) are denied, never ``ask``. The plan agent may not
edit, run commands or spawn sub-agents.

Keys: a real provider's API key is named, never written. The config says
``"apiKey": "{env:VAR}"``, which opencode substitutes from its own environment when it
loads the file, so the key is in neither the file, nor an argv, nor a log of ours. (The
daemon does echo the substituted key in ``GET /config/providers``'s ``options``: never
print that answer whole.) How each provider kind is wired (opencode 1.18.33, whose
binary bundles every package below, so nothing is downloaded at run time):

======================  ===============================  ===================================
kind                    npm package                      base URL
======================  ===============================  ===================================
``openai-compatible``   ``@ai-sdk/openai-compatible``    required (``.../v1``); chat completions
``openai``              ``@ai-sdk/openai``               SDK default; the Responses API
``anthropic``           ``@ai-sdk/anthropic``            SDK default; the Messages API
``openrouter``          ``@openrouter/ai-sdk-provider``  SDK default
``ollama``              ``@ai-sdk/openai-compatible``    default ``http://127.0.0.1:11434/v1``
======================  ===============================  ===================================

The provider id defaults to the kind's name (``anthropic``, ...). For a provider id
that models.dev knows, the daemon's bundled catalogue adds that provider's other
models to ``GET /config/providers``; kodo only ever asks for the model it configured,
whose prices are the configured ones (the config wins over the catalogue).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.model_in_use import STAND_IN_PROVIDER_ID, STAND_IN_PROVIDER_NAME
from shared.opencode.client import MAX_TURN_STEPS
from shared.private_file import write_private

PROVIDER_ID = STAND_IN_PROVIDER_ID
MODEL_ID = "kodo-scripted"
SCRIPTED_KEY = "kodo-scripted-not-a-secret"
"""What the scripted stand-in is given as a key: the SDKs insist on one; it is public."""


class ProviderKind(StrEnum):
    """The provider wirings ``kodo oc up --provider`` offers (see the module docstring)."""

    OPENAI_COMPATIBLE = "openai-compatible"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENROUTER = "openrouter"
    OLLAMA = "ollama"


NPM: dict[ProviderKind, str] = {
    ProviderKind.OPENAI_COMPATIBLE: "@ai-sdk/openai-compatible",
    ProviderKind.OPENAI: "@ai-sdk/openai",
    ProviderKind.ANTHROPIC: "@ai-sdk/anthropic",
    ProviderKind.OPENROUTER: "@openrouter/ai-sdk-provider",
    ProviderKind.OLLAMA: "@ai-sdk/openai-compatible",
}
DEFAULT_BASE_URL: dict[ProviderKind, str] = {ProviderKind.OLLAMA: "http://127.0.0.1:11434/v1"}
NEEDS_BASE_URL = frozenset({ProviderKind.OPENAI_COMPATIBLE})
NEEDS_KEY = frozenset({ProviderKind.OPENAI, ProviderKind.ANTHROPIC, ProviderKind.OPENROUTER})
"""Kinds whose SDK refuses to send a request without a key (a local server may need none)."""

PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
CONTEXT_LIMIT = 128000
OUTPUT_LIMIT = 8192
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_DROPPED_BY_THE_DAEMON_ENV = ("OPENCODE_", "XDG_")  # see daemon.daemon_env


class ProviderConfigError(ValueError):
    """A provider setting kodo will not hand to the daemon; the message names the rule."""


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as opencode's ``cost`` block takes them (reasoning is
    billed as output)."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def parse(cls, items: Iterable[str]) -> Prices:
        """``["input=3", "output=15", "cache_read=0.3", "cache_write=3.75"]``: all four,
        each once, none negative (a free local model says ``0`` four times)."""
        given: dict[str, float] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in PRICE_KEYS:
                raise ProviderConfigError(
                    f"price {item!r}: expected KEY=USD_PER_MILLION_TOKENS with KEY one of "
                    f"{', '.join(PRICE_KEYS)}"
                )
            if key in given:
                raise ProviderConfigError(f"price {key} given twice")
            try:
                value = float(raw)
            except ValueError as exc:
                raise ProviderConfigError(f"price {key}={raw!r} is not a number") from exc
            if not value >= 0 or value == float("inf"):
                raise ProviderConfigError(f"price {key}={raw} must be a finite number >= 0")
            given[key] = value
        missing = [k for k in PRICE_KEYS if k not in given]
        if missing:
            raise ProviderConfigError(
                "a real model's cost is only real if its prices are: give --price "
                + " ".join(f"{k}=USD" for k in missing)
                + " (USD per million tokens; 0 for a free model)"
            )
        return cls(**given)

    def as_config(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PRICE_KEYS}

    def cost(
        self, *, input: int, output: int, reasoning: int, cache_read: int, cache_write: int
    ) -> float:
        """What the daemon should report for these tokens (USD)."""
        billed = (
            input * self.input
            + (output + reasoning) * self.output
            + cache_read * self.cache_read
            + cache_write * self.cache_write
        )
        return billed / 1e6


SCRIPTED_PRICES = Prices(input=1.0, output=2.0, cache_read=0.1, cache_write=0.0)
"""The stand-in's prices: the ones :class:`standins.oc_compat.shapes.Usage` bills at."""


@dataclass(frozen=True)
class ProviderSpec:
    """The one provider and model a daemon is configured with."""

    kind: ProviderKind
    model_id: str
    prices: Prices
    provider_id: str = ""  # "" means the kind's name
    base_url: str | None = None
    api_key_env: str | None = None
    stand_in: bool = False
    context_limit: int = CONTEXT_LIMIT
    output_limit: int = OUTPUT_LIMIT

    @property
    def provider(self) -> str:
        return self.provider_id or self.kind.value

    @property
    def npm(self) -> str:
        return NPM[self.kind]

    @property
    def effective_base_url(self) -> str | None:
        """The URL the daemon will call (``None``: the SDK's own default endpoint)."""
        given = self.base_url.rstrip("/") if self.base_url else None
        return given or DEFAULT_BASE_URL.get(self.kind)

    def check(self, env: Mapping[str, str]) -> None:
        """Refuse what the daemon would fail on later, or what would leak or guess.

        ``env`` is the environment the daemon will inherit: a named key variable must be
        set (and non-empty) there, and must survive :func:`daemon.daemon_env`.
        """
        if not _ID.match(self.provider) or not self.model_id.strip():
            raise ProviderConfigError(
                f"provider {self.provider!r} / model {self.model_id!r}: ids must be non-empty"
                " and the provider id plain (letters, digits, . _ : -)"
            )
        if self.provider == STAND_IN_PROVIDER_ID and not self.stand_in:
            raise ProviderConfigError(
                f"provider id {STAND_IN_PROVIDER_ID!r} is reserved for kodo's scripted stand-in"
                " (kodo tells users a model is the stand-in by that id): pick another"
            )
        if self.kind in NEEDS_BASE_URL and not self.effective_base_url:
            raise ProviderConfigError(
                f"--provider {self.kind.value} needs --base-url (the server's .../v1 URL)"
            )
        if self.effective_base_url and not self.effective_base_url.startswith(
            ("http://", "https://")
        ):
            raise ProviderConfigError(f"base URL {self.effective_base_url!r} is not http(s)")
        if self.context_limit <= 0 or self.output_limit <= 0:
            raise ProviderConfigError("--context-limit and --output-limit must be positive")
        if self.stand_in:
            return
        if self.api_key_env is None:
            if self.kind in NEEDS_KEY:
                raise ProviderConfigError(
                    f"--provider {self.kind.value} needs --api-key-env VAR (the variable"
                    " holding the key; the key itself is never taken on a command line)"
                )
            return
        if not _ENV_NAME.match(self.api_key_env):
            raise ProviderConfigError(f"--api-key-env {self.api_key_env!r} is not a variable name")
        if self.api_key_env.startswith(_DROPPED_BY_THE_DAEMON_ENV):
            raise ProviderConfigError(
                f"--api-key-env {self.api_key_env}: OPENCODE_* and XDG_* variables are not"
                " passed to the isolated daemon; name the key another way"
            )
        if not env.get(self.api_key_env, "").strip():
            raise ProviderConfigError(
                f"--api-key-env {self.api_key_env}: that variable is not set (or empty) here,"
                " so the daemon would start without a key"
            )

    def describe(self) -> str:
        """One line for humans: no key, only where it comes from."""
        where = self.effective_base_url or "the provider's own endpoint"
        if self.stand_in:
            return f"{self.provider}/{self.model_id}: kodo's SCRIPTED STAND-IN at {where}"
        key = f"key from ${self.api_key_env}" if self.api_key_env else "no key"
        return f"{self.provider}/{self.model_id} via {self.npm} at {where} ({key})"


def scripted_provider(
    llm_url: str, *, kind: ProviderKind = ProviderKind.OPENAI_COMPATIBLE
) -> ProviderSpec:
    """kodo's scripted LLM at ``llm_url`` (ending in ``/v1``), over the chat-completions
    wire (``openai-compatible``) or the Messages API (``anthropic``)."""
    return ProviderSpec(
        kind=kind,
        model_id=MODEL_ID,
        prices=SCRIPTED_PRICES,
        provider_id=PROVIDER_ID,
        base_url=llm_url,
        stand_in=True,
        output_limit=4096,
    )


def _options(spec: ProviderSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": 600000, "chunkTimeout": 120000}
    base_url = spec.effective_base_url
    if base_url is not None:
        options["baseURL"] = base_url
    if spec.stand_in:
        options["apiKey"] = SCRIPTED_KEY
    elif spec.api_key_env is not None:
        options["apiKey"] = "{env:" + spec.api_key_env + "}"
    return options


AGENT_STEPS = MAX_TURN_STEPS - 10
"""The agents' ``steps`` (1.18.33: "maximum number of agentic iterations before forcing
text-only response"), with room under MAX_TURN_STEPS for that last answer."""


def global_config(spec: ProviderSpec) -> dict[str, Any]:
    """The config JSON for ``spec`` (check it first: :meth:`ProviderSpec.check`)."""
    provider_id, model_id = spec.provider, spec.model_id
    model = f"{provider_id}/{model_id}"
    name = STAND_IN_PROVIDER_NAME if spec.stand_in else f"kodo: {spec.kind.value}"
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "lsp": False,
        "formatter": False,
        "snapshot": False,
        # no synthetic "continue" inside a turn: an agent that fills its context fails
        # its call instead of having its earlier steps summarised out of the turn kodo
        # judges (OpenCodeClient.earlier_turn_messages refuses such a turn)
        "compaction": {"auto": False},
        "model": model,
        "small_model": model,
        "enabled_providers": [provider_id],
        "provider": {
            provider_id: {
                "npm": spec.npm,
                "name": name,
                "options": _options(spec),
                "models": {
                    model_id: {
                        "name": model_id,
                        "tool_call": True,
                        "limit": {"context": spec.context_limit, "output": spec.output_limit},
                        "cost": spec.prices.as_config(),
                    }
                },
            }
        },
        "permission": {
            "external_directory": "deny",
            "doom_loop": "deny",
            "question": "deny",
            "webfetch": "deny",
            "websearch": "deny",
        },
        # At most AGENT_STEPS agentic steps, then a text-only answer: every turn stays
        # short enough for kodo to read whole and judge (MAX_TURN_STEPS).
        "agent": {
            "plan": {
                "steps": AGENT_STEPS,
                "permission": {"edit": "deny", "bash": "deny", "task": "deny"},
            },
            "build": {
                "steps": AGENT_STEPS,
                "permission": {"edit": "allow", "bash": "deny", "task": "deny"},
            },
        },
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` readable only by us (it names where the key comes from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(config, indent=2) + "\n")
    return path
