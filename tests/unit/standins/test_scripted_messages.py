"""The scripted LLM's Messages API wire: read as the script reads chat completions, and
answered with the same reply, its tokens stated the Messages API's way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from standins.oc_compat.shapes import Usage
from standins.scripted_llm.anthropic import error_body, events, parse_messages_request
from standins.scripted_llm.request import BadChatRequest, parse_chat_request
from standins.scripted_llm.script import Reply, decide

SYSTEM = "You are opencode.\n<env>\n  Working directory: /srv/kodo-repo\n</env>"
SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}}


def _messages_body(*turns: dict[str, object]) -> dict[str, object]:
    return {
        "model": "claude-x",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": SYSTEM}],
        "messages": list(turns),
        "tools": [
            {"name": "read", "input_schema": {}},
            {"name": "StructuredOutput", "input_schema": SCHEMA},
        ],
        "tool_choice": {"type": "any"},
        "stream": True,
    }


def _user(*texts: str) -> dict[str, object]:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


def test_a_messages_request_reads_like_the_same_chat_request() -> None:
    request = parse_messages_request(
        _messages_body(_user("Explain calc.py", "<system-reminder>plan mode</system-reminder>"))
    )
    chat = parse_chat_request(
        {
            "model": "claude-x",
            "messages": [{"role": "system", "content": SYSTEM}, _user("Explain calc.py")],
            "tools": [
                {"type": "function", "function": {"name": "read", "parameters": {}}},
                {
                    "type": "function",
                    "function": {"name": "StructuredOutput", "parameters": SCHEMA},
                },
            ],
            "tool_choice": "required",
            "stream": True,
        }
    )
    assert request == chat
    assert request.directory == Path("/srv/kodo-repo")
    assert decide(5, request) == decide(5, chat)


def test_tool_results_come_back_in_a_user_turn_and_count_as_this_turns_calls() -> None:
    request = parse_messages_request(
        _messages_body(
            _user("Explain calc.py [oc:tool=read]"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
            },
        )
    )
    assert request.prompt == "Explain calc.py [oc:tool=read]"
    assert request.calls_this_turn == 1


def test_the_events_state_the_tool_call_and_bill_reasoning_as_output() -> None:
    reply = Reply(
        tool="read",
        arguments='{"filePath": "a"}',
        usage=Usage(input=10, output=4, reasoning=3, cache_read=2),
    )
    sent = b"".join(events(reply, tool_use_id="toolu_1")).decode()
    data = [json.loads(line[6:]) for line in sent.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in data] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert data[0]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "read",
        "input": {},
    }
    assert data[1]["delta"] == {"type": "input_json_delta", "partial_json": '{"filePath": "a"}'}
    assert data[3]["delta"]["stop_reason"] == "tool_use"
    assert data[3]["usage"] == {"output_tokens": 7}


@pytest.mark.parametrize("body", [None, {"messages": "no"}, {"messages": [], "tools": [{}]}])
def test_a_malformed_body_is_refused(body: object) -> None:
    with pytest.raises(BadChatRequest):
        parse_messages_request(body)


def test_errors_have_the_messages_api_shape() -> None:
    assert error_body(503, "busy") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


def test_the_calls_made_this_turn_read_alike_on_both_wires() -> None:
    """The build agent's edit turn decides what remains from them (script.edit_turn)."""
    arguments = {"filePath": "/srv/kodo-repo/calc.py"}
    request = parse_messages_request(
        _messages_body(
            _user("Edit calc.py"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": arguments}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
            },
        )
    )
    chat = parse_chat_request(
        {
            "model": "claude-x",
            "messages": [
                {"role": "system", "content": SYSTEM},
                _user("Edit calc.py"),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "read", "arguments": json.dumps(arguments)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "x"},
            ],
        }
    )
    assert [(t, json.loads(a)) for t, a in request.turn_calls] == [("read", arguments)]
    assert [(t, json.loads(a)) for t, a in chat.turn_calls] == [("read", arguments)]
