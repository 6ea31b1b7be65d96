"""The chat-completions wire format: SSE chunks, as OpenAI-compatible servers send them.

Section 2.3 of the OpenCode notes: chunks of ``chat.completion.chunk``, then one with
``finish_reason``, then a usage chunk with ``choices: []``, then ``data: [DONE]``.
Usage is stated the provider's way (prompt tokens include cached ones, completion
tokens include reasoning); OpenCode subtracts them back into its own fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from standins.oc_compat import shapes
from standins.scripted_llm.script import Reply


def sse(value: object) -> bytes:
    return f"data: {json.dumps(value)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": scripted model is thinking\n\n"
"""An SSE comment: clients ignore it, and writing it finds out whether they left."""


def usage_json(usage: shapes.Usage) -> dict[str, Any]:
    prompt = usage.input + usage.cache_read
    completion = usage.output + usage.reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def chunks(reply: Reply, *, completion_id: str, model: str, call_id: str) -> Iterator[bytes]:
    """The SSE body of ``reply`` after the first (role) chunk."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": choices,
                **extra,
            }
        )

    if reply.tool is not None:
        call = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": reply.tool, "arguments": reply.arguments},
        }
        yield chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])
    elif reply.text:
        yield chunk([{"index": 0, "delta": {"content": reply.text}, "finish_reason": None}])
    yield chunk([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
    if reply.usage is not None:
        yield chunk([], usage=usage_json(reply.usage))
    yield DONE


def role_chunk(*, completion_id: str, model: str) -> bytes:
    delta = {"role": "assistant", "content": ""}
    return sse(
        {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
    )
