"""The scripted LLM's ``/__kodo/stats``: what it was sent, not only what it answered.

Its token counts (:func:`standins.oc_compat.shapes.usage_for`) read only the last user
text, as the compat server does; a real provider bills the whole request. The bytes
of the request bodies are how a test sees a history the daemon re-sends (a forked
session's, say) that the scripted usage cannot show.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from standins.scripted_llm import running_llm

SYSTEM = "You are opencode.\n<env>\n  Working directory: /srv/kodo-repo\n</env>"


def _chat(*messages: dict[str, Any]) -> bytes:
    body = {
        "model": "kodo-scripted",
        "messages": [{"role": "system", "content": SYSTEM}, *messages],
        "stream": True,
    }
    return json.dumps(body).encode()


def test_stats_sum_the_bytes_of_the_request_bodies_the_model_was_sent() -> None:
    short = _chat({"role": "user", "content": "Say hello"})
    longer = _chat(
        {"role": "user", "content": "Plan it"},
        {"role": "assistant", "content": "The plan, at length. " * 40},
        {"role": "user", "content": "Say hello"},
    )
    with running_llm(seed=1) as url:
        root = url.removesuffix("/v1")
        for body in (short, longer):
            sent = httpx.post(
                f"{url}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=5.0,
            )
            assert sent.status_code == 200
        stats = httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()
        assert stats["chat_requests"] == 2
        assert stats["request_bytes"] == len(short) + len(longer)
        httpx.post(f"{root}/__kodo/reset", timeout=5.0).raise_for_status()
        assert httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()["request_bytes"] == 0


def test_the_same_last_user_text_is_billed_alike_whatever_history_precedes_it() -> None:
    """The limit the byte count exists for: usage ignores the history."""
    alone = _chat({"role": "user", "content": "Say hello"})
    after_history = _chat(
        {"role": "user", "content": "Plan it"},
        {"role": "assistant", "content": "The plan, at length. " * 40},
        {"role": "user", "content": "Say hello"},
    )
    with running_llm(seed=1) as url:
        root = url.removesuffix("/v1")
        usages = []
        for body in (alone, after_history):
            httpx.post(f"{root}/__kodo/reset", timeout=5.0).raise_for_status()
            httpx.post(
                f"{url}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=5.0,
            ).raise_for_status()
            usages.append(httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()["usage"])
        assert usages[0] == usages[1]


def test_stats_count_the_answers_held_back_at_once() -> None:
    """``held_peak``: how many ``[oc:slow]`` answers were held at the same time, which is
    how the bench sees that a real daemon's held prompts reached the model together."""
    body = json.loads(_chat({"role": "user", "content": "Say hello [oc:slow=600]"}))
    # A request with tools (one without is OpenCode's title request, never held).
    body["tools"] = [{"type": "function", "function": {"name": "read", "parameters": {}}}]
    held = json.dumps(body).encode()
    with running_llm(seed=1) as url:
        root = url.removesuffix("/v1")

        def send(_: int) -> int:
            return httpx.post(
                f"{url}/chat/completions",
                content=held,
                headers={"Content-Type": "application/json"},
                timeout=10.0,
            ).status_code

        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(send, range(3))) == [200, 200, 200]
        stats = httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()
        assert stats["held"] == 0
        assert 1 <= stats["held_peak"] <= 3
        httpx.post(f"{root}/__kodo/reset", timeout=5.0).raise_for_status()
        assert httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()["held_peak"] == 0
