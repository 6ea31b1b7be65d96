"""Reading what OpenCode sends the model: the prompt, the working tree, the tools offered.

Shapes follow ``fake-llm.received-request.*.json`` captured from opencode 1.18.33:
``messages[0]`` is the system prompt with an ``<env>`` block naming the working
directory; the user turn is a list of text parts, to which the plan agent appends a
``<system-reminder>`` part; tool results come back as ``role: "tool"`` messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STRUCTURED_TOOL = "StructuredOutput"
"""OpenCode's tool for ``format: json_schema`` prompts (sent with ``tool_choice: required``)."""

_WORKDIR = re.compile(r"^\s*Working directory:\s*(.+?)\s*$", re.MULTILINE)
REMINDER = "<system-reminder>"
NO_DIRECTORY = Path("/nonexistent/kodo-scripted-llm")
"""Used when the system prompt names no directory: answers then assume an empty tree."""


class BadChatRequest(ValueError):
    """The body is not a chat-completions request this server can answer."""


def text_of(content: object) -> list[str]:
    """The text parts of a message's content (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return [t for t in texts if isinstance(t, str)]


@dataclass(frozen=True)
class ChatRequest:
    """The parts of one chat-completions request the script decides on."""

    model: str
    system: str
    prompt: str
    tools: dict[str, dict[str, Any]]
    tool_choice: str
    calls_this_turn: int
    stream: bool
    turn_calls: tuple[tuple[str, str], ...] = ()  # (tool, arguments JSON) made this turn

    @property
    def directory(self) -> Path:
        found = _WORKDIR.search(self.system)
        return Path(found.group(1)) if found else NO_DIRECTORY

    @property
    def structured_schema(self) -> dict[str, Any] | None:
        """The JSON Schema the StructuredOutput tool takes, when the request offers it."""
        return self.tools.get(STRUCTURED_TOOL)

    @property
    def is_title_request(self) -> bool:
        """OpenCode's title generation: no tools at all (kodo avoids it by naming sessions)."""
        return not self.tools


def named_tools(raw: object, *, within: str | None, schema_key: str) -> dict[str, dict[str, Any]]:
    """The offered tools by name with their input schemas: each entry is an object whose
    ``within`` member (chat completions: ``function``; the Messages API: the entry itself)
    holds a ``name`` and the schema under ``schema_key``."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise BadChatRequest("tools must be a list")
    tools: dict[str, dict[str, Any]] = {}
    for tool in raw:
        holder = tool.get(within) if within is not None and isinstance(tool, dict) else tool
        name = holder.get("name") if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or not isinstance(name, str):
            raise BadChatRequest(f"each tool needs {f'{within}.name' if within else 'a name'}")
        schema = holder.get(schema_key)
        tools[name] = schema if isinstance(schema, dict) else {}
    return tools


def parse_chat_request(body: object) -> ChatRequest:
    """Check and read a ``POST /v1/chat/completions`` body (fail closed on bad shapes)."""
    if not isinstance(body, dict):
        raise BadChatRequest("body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadChatRequest("messages must be a list of objects")
    system = "\n".join(
        t for m in messages if m.get("role") == "system" for t in text_of(m.get("content"))
    )
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = ""
    if last_user >= 0:
        texts = text_of(messages[last_user].get("content"))
        prompt = "\n".join(t for t in texts if not t.lstrip().startswith(REMINDER))
    calls = sum(
        1 for m in messages[last_user + 1 :] if m.get("role") == "assistant" and m.get("tool_calls")
    )
    made = tuple(
        (str(fn.get("name")), str(fn.get("arguments", "")))
        for m in messages[last_user + 1 :]
        if m.get("role") == "assistant" and isinstance(m.get("tool_calls"), list)
        for call in m["tool_calls"]
        if isinstance(call, dict)
        for fn in [call.get("function")]
        if isinstance(fn, dict)
    )
    choice = body.get("tool_choice", "auto")
    model = body.get("model", "")
    return ChatRequest(
        model=model if isinstance(model, str) else "",
        system=system,
        prompt=prompt,
        tools=named_tools(body.get("tools"), within="function", schema_key="parameters"),
        tool_choice=choice if isinstance(choice, str) else "auto",
        calls_this_turn=calls,
        stream=body.get("stream") is True,
        turn_calls=made,
    )
