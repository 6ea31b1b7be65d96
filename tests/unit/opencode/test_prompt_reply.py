"""PromptReply reads the daemon's reply shape and refuses any other."""

from __future__ import annotations

import pytest

from shared.opencode.client import ModelRef, PromptReply
from shared.opencode.errors import OpenCodePermanentError
from tests.unit.opencode.captures import capture


def test_a_structured_reply_exposes_the_answer_usage_and_cost() -> None:
    reply = PromptReply.from_json(capture("prompt.structured.response.json"))
    assert reply.structured == {
        "verdict": "ok",
        "summary": "structured fake answer",
        "files": ["README.md"],
    }
    assert reply.error_name is None
    assert reply.message_id == "msg_2127e7544001qTvmuszGDOIIHB"
    assert reply.tokens.input == 1034
    assert reply.tokens.cache_read == 200
    assert reply.tokens.total == 1290
    assert reply.cost == pytest.approx(0.001166)
    assert reply.tool_names == ["StructuredOutput"]


def test_an_aborted_reply_keeps_its_partial_text_and_bills_nothing() -> None:
    reply = PromptReply.from_json(capture("prompt.aborted.response.json"))
    assert reply.error_name == "MessageAbortedError"
    assert reply.text == "slow-0 slow-1 slow-2 "
    assert reply.structured is None
    assert reply.tokens.total == 0
    assert reply.cost == 0.0


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"info": {}},
        {"parts": []},
        {"info": [], "parts": []},
        {"info": {}, "parts": [1]},
    ],
)
def test_a_reply_of_the_wrong_shape_is_a_permanent_error(body: object) -> None:
    with pytest.raises(OpenCodePermanentError):
        PromptReply.from_json(body)


def test_a_model_ref_is_sent_with_the_daemons_field_names() -> None:
    assert ModelRef("kodo", "kodo-scripted").to_json() == {
        "providerID": "kodo",
        "modelID": "kodo-scripted",
    }
