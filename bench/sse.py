"""A minimal server-sent-events reader for ``GET /runs/{id}/events`` (httpx, asyncio)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

import httpx

# How long a 503/429 asked to wait: read as kodo's own CLI reads it.
from services.cli.client import retry_after_s

MAX_RETRIES = 8


def refusal(response: httpx.Response) -> str:
    """``503 api_busy``: the status and kodo's error code, what a retry is counted under."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"{response.status_code} {code}"


async def back_off(wait_s: float) -> None:
    """Wait as asked, plus up to a second of jitter: refused runs do not return in step."""
    await asyncio.sleep(wait_s + random.uniform(0, 1))  # noqa: S311 (no secret: jitter)


class StreamError(RuntimeError):
    pass


async def run_events(
    http: httpx.AsyncClient,
    run_id: str,
    until: str | None = None,
    retried: Counter[str] | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each ``run`` event's data until the server ends the stream.

    With ``retried``, opening the stream is tried again after ``Retry-After`` when the
    API refuses it with 503 or 429 (at most MAX_RETRIES times, each counted there)."""
    params = {"until": until} if until else None
    for attempt in range(MAX_RETRIES + 1):
        async with http.stream(
            "GET", f"/runs/{run_id}/events", params=params, timeout=httpx.Timeout(120.0)
        ) as response:
            if response.status_code != 200:
                await response.aread()
                wait_s = retry_after_s(response)
                if retried is None or wait_s is None or attempt == MAX_RETRIES:
                    raise StreamError(f"events of {run_id}: {response.status_code} {response.text}")
                retried[f"GET /runs/<id>/events {refusal(response)}"] += 1
            else:
                async for event in _events(response):
                    yield event
                return
        await back_off(wait_s)


async def _events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    data: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data is not None:
            event: dict[str, Any] = json.loads(data)
            data = None
            yield event
