"""The daemon's messages as kodo reads them: pure types shared by the port and its adapters.

No transport here: the httpx adapter (:mod:`shared.opencode.client`), the in-memory
fake (tests/fakes) and the call protocol all speak these.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from typing import Any

from shared.opencode.errors import OpenCodePermanentError

DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""KODO_MAX_ANSWER_BYTES's default: a largest valid patch (1 MB diff), JSON-escaped and
repeated in the tool part, fits with room to spare."""


class AnswerTooLarge(OpenCodePermanentError):
    """A response body over the byte cap: refused unread, before any parsing.

    Every answer is written by an attacker (the model read a hostile repository);
    reading and parsing a body of any size would let it choose the worker's memory.
    """

    code = "answer_too_large"


class AnswerNotJson(OpenCodePermanentError):
    """A 2xx body that does not parse as JSON (NaN and Infinity included: Python reads
    them, JSON and Postgres's jsonb do not). ``reason`` is the parser's, never the
    body's own text, so a refusal may quote it."""

    code = "answer_not_json"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, name="AnswerNotJson")
        self.reason = reason


_BASE62 = string.digits + string.ascii_letters


def prompt_message_id(op_key: str) -> str:
    """The id kodo gives the user message of the call ``op_key`` (the prompt's
    ``messageID``): every assistant message of its turn names it as ``parentID``, so
    the turn's messages are told apart by structure, not by where a listing stops.

    The daemon's ids are ``msg_`` + 12 hex digits of time + 14 base62 characters. It
    lists a session's messages by creation time, then id, and its loop ends a turn
    once the last assistant message's id passes the last user message's. This one's
    time part is zero: it sorts before every message the daemon makes, whatever the
    clocks of the worker and the daemon say. That holds only in a FRESH session, as
    every kodo call's is: in one already holding an answer, the loop would take the
    turn for ended before it ran (it then fails closed: the answer is not this
    prompt's). The rest is the op_key's digest: every delivery names the same message.
    """
    value = int.from_bytes(hashlib.sha256(op_key.encode()).digest(), "big")
    suffix = []
    for _ in range(14):
        value, digit = divmod(value, 62)
        suffix.append(_BASE62[digit])
    return "msg_" + "0" * 12 + "".join(suffix)


@dataclass(frozen=True)
class ModelRef:
    """Which provider/model answers a prompt; always sent, the default is a trap."""

    provider_id: str
    model_id: str

    def to_json(self) -> dict[str, str]:
        return {"providerID": self.provider_id, "modelID": self.model_id}


@dataclass(frozen=True)
class TokenUsage:
    """One call's usage as the daemon reports it (cache reads and writes are not in
    ``input``: its total counts both, since the provider took both in; a step whose new
    context went to the cache had counted as its uncached few tokens, red-team
    helper-129)."""

    input: int
    output: int
    reasoning: int
    cache_read: int
    cache_write: int

    @property
    def total(self) -> int:
        return self.input + self.output + self.reasoning + self.cache_read + self.cache_write


def _count(value: object) -> int:
    """A count the daemon reported: a non-negative integer, else 0 (read, not trusted)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def object_or_empty(value: object) -> dict[str, Any]:
    """``value`` if the daemon sent an object there, else an empty one (read, not trusted)."""
    return value if isinstance(value, dict) else {}


def token_usage(tokens: object) -> TokenUsage:
    """OpenCode's ``tokens`` object (of a message or a session), each count checked."""
    raw = object_or_empty(tokens)
    cache = object_or_empty(raw.get("cache"))
    return TokenUsage(
        input=_count(raw.get("input")),
        output=_count(raw.get("output")),
        reasoning=_count(raw.get("reasoning")),
        cache_read=_count(cache.get("read")),
        cache_write=_count(cache.get("write")),
    )


@dataclass(frozen=True)
class PromptReply:
    """The last assistant message of a turn: ``info`` and its ``parts``."""

    info: dict[str, Any]
    parts: list[dict[str, Any]]

    @classmethod
    def from_json(cls, body: object) -> PromptReply:
        """Check the shape of a ``POST /session/{id}/message`` body (fail closed)."""
        if not isinstance(body, dict):
            raise OpenCodePermanentError(f"prompt reply is not an object: {body!r:.200}")
        info, parts = body.get("info"), body.get("parts")
        if not isinstance(info, dict):
            raise OpenCodePermanentError("prompt reply has no info object")
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise OpenCodePermanentError("prompt reply parts is not a list of objects")
        return cls(info=info, parts=parts)

    @property
    def structured(self) -> Any:
        """The StructuredOutput tool's arguments, unvalidated (OpenCode never checks them)."""
        return self.info.get("structured")

    @property
    def error_name(self) -> str | None:
        error = self.info.get("error")
        name = error.get("name") if isinstance(error, dict) else None
        return name if isinstance(name, str) else None

    @property
    def message_id(self) -> str | None:
        value = self.info.get("id")
        return value if isinstance(value, str) else None

    @property
    def tokens(self) -> TokenUsage:
        return token_usage(self.info.get("tokens"))

    @property
    def cost(self) -> float:
        """USD billed for this message; 0.0 when absent or not a number."""
        value = self.info.get("cost")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0.0
        return float(value)

    @property
    def text(self) -> str:
        """The concatenated text parts (a prose answer, or partial text when aborted)."""
        texts = (p.get("text") for p in self.parts if p.get("type") == "text")
        return "".join(t for t in texts if isinstance(t, str))

    @property
    def tool_names(self) -> list[str]:
        """Every tool the message called, in order, for allowlist checks."""
        tools = (p.get("tool") for p in self.parts if p.get("type") == "tool")
        return [t for t in tools if isinstance(t, str)]
