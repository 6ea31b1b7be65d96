"""The bench's client retries only what the API asked it to retry, and names why."""

from __future__ import annotations

import httpx

from bench.sse import refusal
from services.cli.client import MAX_RETRY_AFTER_S, retry_after_s


def reply(status: int, retry_after: str | None = None, code: str = "api_busy") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, json={"error": {"code": code}})


def test_a_503_or_429_with_retry_after_is_retried_after_that_wait() -> None:
    assert retry_after_s(reply(503, "5")) == 5.0
    assert retry_after_s(reply(429, "15", code="too_many_streams")) == 15.0
    assert retry_after_s(reply(503, "3600")) == MAX_RETRY_AFTER_S


def test_anything_else_is_final() -> None:
    assert retry_after_s(reply(503)) is None, "no Retry-After: the API did not ask"
    assert retry_after_s(reply(503, "Wed, 21 Oct 2015 07:28:00 GMT")) is None
    assert retry_after_s(reply(500, "5", code="internal_error")) is None
    assert retry_after_s(reply(201, "5")) is None


def test_a_retry_is_counted_under_the_status_and_kodos_error_code() -> None:
    assert refusal(reply(503, "5", code="database_busy")) == "503 database_busy"
    assert refusal(httpx.Response(503, text="not json")) == "503 ?"
