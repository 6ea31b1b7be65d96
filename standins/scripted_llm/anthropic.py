"""The Anthropic Messages API wire: ``POST /v1/messages``, read and answered as SSE.

The same script decides (:func:`standins.scripted_llm.script.decide`), so a daemon
configured with ``@ai-sdk/anthropic`` against this server gets the same answers, the
same tool calls and the same tokens and cost as one configured with
``@ai-sdk/openai-compatible`` against the chat-completions route. One difference is
the wire's, not ours: the Messages API has no reasoning-token count (thinking is
billed as output), so the reasoning tokens are reported inside ``output_tokens``; the
cost is the same since opencode bills reasoning at the output price.

Request (what ``@ai-sdk/anthropic`` sends): a top-level ``system`` (a string or text
blocks), ``messages`` of ``user``/``assistant`` turns whose content is a string or
blocks (``text``, ``tool_use`` from the model, ``tool_result`` sent back in a user
turn), ``tools`` as ``{name, description, input_schema}``, ``tool_choice`` as
``{type: auto|any|tool|none}``. Response events: ``message_start`` (input and cache
usage), per block ``content_block_start``/``_delta``/``_stop`` (``text_delta`` or
``input_json_delta``), ``message_delta`` (``stop_reason`` and the output tokens),
``message_stop``; ``ping`` events while a slow answer is pending. Errors are
``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from shared.hashing import sha256_hex
from standins.scripted_llm.request import (
    REMINDER,
    BadChatRequest,
    ChatRequest,
    named_tools,
    text_of,
)
from standins.scripted_llm.script import Reply

PATH = "/v1/messages"
_CHOICES = {"auto": "auto", "any": "required", "tool": "required", "none": "none"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    503: "overloaded_error",
}


def _blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _has_text(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "text" for b in _blocks(message.get("content")))


def parse_messages_request(body: object) -> ChatRequest:
    """Check and read a ``POST /v1/messages`` body into the script's request shape."""
    if not isinstance(body, dict):
        raise BadChatRequest("body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadChatRequest("messages must be a list of objects")
    system = "\n".join(text_of(body.get("system")))
    # Tool results come back in user turns: the prompt is the last user turn with text.
    last_user = max(
        (i for i, m in enumerate(messages) if m.get("role") == "user" and _has_text(m)),
        default=-1,
    )
    prompt = ""
    if last_user >= 0:
        texts = text_of(_blocks(messages[last_user].get("content")))
        prompt = "\n".join(t for t in texts if not t.lstrip().startswith(REMINDER))
    calls = sum(
        1
        for m in messages[last_user + 1 :]
        if m.get("role") == "assistant"
        and any(b.get("type") == "tool_use" for b in _blocks(m.get("content")))
    )
    made = tuple(
        (str(b.get("name")), json.dumps(b.get("input", {})))
        for m in messages[last_user + 1 :]
        if m.get("role") == "assistant"
        for b in _blocks(m.get("content"))
        if b.get("type") == "tool_use"
    )
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    model = body.get("model", "")
    return ChatRequest(
        model=model if isinstance(model, str) else "",
        system=system,
        prompt=prompt,
        tools=named_tools(body.get("tools"), within=None, schema_key="input_schema"),
        tool_choice=_CHOICES.get(kind, "auto") if isinstance(kind, str) else "auto",
        calls_this_turn=calls,
        stream=body.get("stream") is True,
        turn_calls=made,
    )


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


PING = event("ping", {"type": "ping"})


def call_id(reply: Reply, seed: int, nth: int) -> str:
    return f"toolu_{sha256_hex(f'{seed}:{nth}:{reply.tool}:{reply.arguments}')[:16]}"


def message_start(reply: Reply, *, message_id: str, model: str) -> bytes:
    usage = reply.usage
    return event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": usage.input if usage else 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": usage.cache_read if usage else 0,
                    "output_tokens": 1,
                },
            },
        },
    )


def events(reply: Reply, *, tool_use_id: str) -> Iterator[bytes]:
    """The body of ``reply`` after ``message_start`` (and any pings)."""
    if reply.tool is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": tool_use_id, "name": reply.tool}
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
        )
        delta = {"type": "input_json_delta", "partial_json": reply.arguments}
    else:
        yield event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        delta = {"type": "text_delta", "text": reply.text or ""}
    yield event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
    usage = reply.usage
    output = usage.output + usage.reasoning if usage else 0
    stop = "tool_use" if reply.tool is not None else "end_turn"
    yield event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": output},
        },
    )
    yield event("message_stop", {"type": "message_stop"})


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
