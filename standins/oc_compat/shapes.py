"""The daemon's JSON shapes (ids, sessions, assistant messages, parts, usage).

Key order and field names follow captures of OpenCode 1.18.33, so a client that
works here works there. Ids mix a per-process counter with seeded draws: unique
within a server, repeatable across runs with the same seed.
"""

from __future__ import annotations

import hashlib
import math
import os
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.model_in_use import STAND_IN_PROVIDER_NAME
from shared.rng import seeded_rng

VERSION = "1.18.33"
"""The OpenCode API version these shapes mirror."""

SYSTEM_PROMPT_BYTES = 9600
"""Size of OpenCode's built-in system prompt, billed as input on every call."""

_ALPHABET = string.ascii_letters + string.digits
_SLUG_WORDS = (
    ("brave", "calm", "eager", "glowing", "quiet", "swift", "tidy", "witty"),
    ("cactus", "canyon", "garden", "harbor", "lagoon", "meadow", "comet", "river"),
)


def now_ms() -> int:
    return int(time.time() * 1000)


class IdFactory:
    """``ses_``/``msg_``/``prt_``/``call_`` ids: counter for order, seeded tail for looks."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counter = 0
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            counter = self._counter
        # One digest, not a seeded random.Random per id (14 us each, 6% of the
        # stand-in's CPU in the bench's think phase).
        digest = hashlib.sha256(f"{self._seed}\x1fid\x1f{prefix}\x1f{counter}".encode()).digest()
        if prefix == "call":
            return f"call_{digest[:4].hex()}"
        tail = "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:14])
        return f"{prefix}_{counter:012x}{tail}"


def slug(seed: int, session_id: str) -> str:
    rng = seeded_rng(seed, "slug", session_id)
    return f"{rng.choice(_SLUG_WORDS[0])}-{rng.choice(_SLUG_WORDS[1])}"


def zero_tokens() -> dict[str, Any]:
    return {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


@dataclass(frozen=True)
class Usage:
    """One model call's tokens, mapped the way OpenCode maps provider usage."""

    input: int
    output: int
    reasoning: int
    cache_read: int

    @property
    def total(self) -> int:
        return self.input + self.output + self.reasoning + self.cache_read

    @property
    def cost(self) -> float:
        """USD at the configured rates: 1.0 in, 2.0 out (reasoning too), 0.1 cached, per 1M."""
        billed = self.input * 1.0 + (self.output + self.reasoning) * 2.0 + self.cache_read * 0.1
        return round(billed / 1e6, 9)

    def tokens(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "input": self.input,
            "output": self.output,
            "reasoning": self.reasoning,
            "cache": {"write": 0, "read": self.cache_read},
        }


def usage_for(seed: int, prompt: str, system: str, answer: str) -> Usage:
    """Realistic usage: bytes/4 tokens, a seeded share of the prompt read from cache."""
    rng = seeded_rng(seed, "usage", prompt, system)
    prompt_bytes = SYSTEM_PROMPT_BYTES + len(prompt.encode()) + len(system.encode())
    prompt_tokens = math.ceil(prompt_bytes / 4)
    cached = min(prompt_tokens // 2, 64 * rng.randint(0, 8))
    reasoning = rng.randint(3, 24)
    output = max(1, math.ceil(len(answer.encode()) / 4))
    return Usage(
        input=prompt_tokens - cached, output=output, reasoning=reasoning, cache_read=cached
    )


def add_usage(session: dict[str, Any], usage: Usage) -> None:
    """Grow a session's running totals (sessions carry no ``total``, like the daemon)."""
    tokens = session["tokens"]
    tokens["input"] += usage.input
    tokens["output"] += usage.output
    tokens["reasoning"] += usage.reasoning
    tokens["cache"]["read"] += usage.cache_read
    session["cost"] = round(session["cost"] + usage.cost, 9)


SESSION_KEY_ORDER = (
    "id",
    "slug",
    "projectID",
    "directory",
    "path",
    "summary",
    "cost",
    "tokens",
    "title",
    "agent",
    "model",
    "version",
    "time",
    "permission",
)
"""The daemon's key order of a Session (``agent``/``model``/``summary`` after a prompt)."""


def prompted(session: dict[str, Any], agent: str, provider_id: str, model_id: str) -> None:
    """What the daemon adds to a session on its first prompt, in the daemon's key order."""
    session.setdefault("summary", {"additions": 0, "deletions": 0, "files": 0})
    session["agent"] = agent
    session["model"] = {"id": model_id, "providerID": provider_id, "variant": "default"}
    ordered = {k: session[k] for k in SESSION_KEY_ORDER if k in session}
    ordered.update({k: v for k, v in session.items() if k not in ordered})
    session.clear()
    session.update(ordered)


def retry_status(attempt: int, next_ms: int) -> dict[str, Any]:
    """``GET /session/status`` of a session whose model call the daemon is retrying."""
    return {
        "type": "retry",
        "attempt": attempt,
        "message": "scripted server error",
        "next": next_ms,
    }


@dataclass(frozen=True)
class MessageContext:
    """Who asked: the ids and settings every assistant message repeats."""

    session_id: str
    message_id: str
    parent_id: str
    agent: str
    provider_id: str
    model_id: str
    directory: str
    created_ms: int


def part(ctx: MessageContext, part_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "id": part_id, "sessionID": ctx.session_id, "messageID": ctx.message_id}


def info(
    ctx: MessageContext,
    *,
    usage: Usage | None,
    finish: str | None,
    structured: Any = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AssistantMessage; ``usage=None`` means nothing was billed (aborted, API error)."""
    body: dict[str, Any] = {
        "parentID": ctx.parent_id,
        "role": "assistant",
        "mode": ctx.agent,
        "agent": ctx.agent,
        "path": {"cwd": ctx.directory, "root": ctx.directory},
        "cost": usage.cost if usage else 0,
        "tokens": usage.tokens() if usage else zero_tokens(),
        "modelID": ctx.model_id,
        "providerID": ctx.provider_id,
        "time": {"created": ctx.created_ms, "completed": now_ms()},
    }
    if finish is not None:
        body["finish"] = finish
    if structured is not None:
        body["structured"] = structured
    if error is not None:
        body["error"] = error
    body["id"] = ctx.message_id
    body["sessionID"] = ctx.session_id
    return body


def tool_input(tool: str, directory: str, target: str) -> dict[str, Any]:
    """What a compat tool part says it was given: a file tool names ``target`` (joined to
    ``directory`` as the scripted model does, ``..`` kept) or a marker file in it."""
    if tool not in ("write", "edit", "read"):
        return {}
    return {"filePath": os.path.join(directory, target or "kodo-tool-ran.txt")}


def tool_part(
    call_id: str, tool: str, tool_input: Any, output: str, title: str, *, failed: bool = False
) -> dict[str, Any]:
    """A tool part as the daemon records it: ``completed`` with its output and title, or
    (``failed``) ``error`` with ``output`` as the error."""
    start = now_ms()
    state: dict[str, Any] = {"status": "error", "input": tool_input, "error": output}
    if not failed:
        state = {
            "status": "completed",
            "input": tool_input,
            "output": output,
            "metadata": {"valid": True} if tool == "StructuredOutput" else {},
            "title": title,
        }
    state["time"] = {"start": start, "end": now_ms()}
    return {"type": "tool", "tool": tool, "callID": call_id, "state": state}


def edit_part(
    call_id: str, tool: str, tool_input: dict[str, str], path: str, ok: bool, output: str
) -> dict[str, Any]:
    """An edit tool's part: ``completed`` (naming the file in its metadata, as the daemon
    does) or ``error`` (a denied or failed edit); either way its input names the path."""
    part = tool_part(call_id, tool, tool_input, output, path.rsplit("/", 1)[-1], failed=not ok)
    if ok:
        part["state"]["metadata"] = {"filepath": path, "diagnostics": {}}
    return part


def step_finish(reason: str, usage: Usage) -> dict[str, Any]:
    """No ``snapshot`` key: kodo's daemon config has ``snapshot: false`` (conformance)."""
    return {
        "reason": reason,
        "type": "step-finish",
        "tokens": usage.tokens(),
        "cost": usage.cost,
    }


def error_body(name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "data": {"message": message, **extra}}


_AGENT_DESCRIPTIONS = {
    "build": "The default agent. Executes tools based on configured permissions.",
    "plan": "Plan mode. Disallows all edit tools.",
}


def agent(name: str) -> dict[str, Any]:
    """One entry of ``GET /agent`` (the daemon's keys; no prompt or permission rules)."""
    return {
        "name": name,
        "description": _AGENT_DESCRIPTIONS.get(name, ""),
        "mode": "primary",
        "native": True,
        "hidden": None,
        "options": {},
        "steps": None,
    }


def providers(provider_id: str, model_id: str) -> dict[str, Any]:
    """``GET /config/providers``: the one configured provider offering the one model."""
    model = {"id": model_id, "providerID": provider_id, "name": model_id, "status": "active"}
    return {
        "providers": [
            {
                "id": provider_id,
                "name": STAND_IN_PROVIDER_NAME,
                "source": "config",
                "env": [],
                "options": {},
                "models": {model_id: model},
            }
        ],
        "default": {provider_id: model_id},
    }
