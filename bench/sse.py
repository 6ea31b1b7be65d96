"""A minimal server-sent-events reader for ``GET /runs/{id}/events`` (httpx, asyncio)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx


class StreamError(RuntimeError):
    pass


async def run_events(
    http: httpx.AsyncClient, run_id: str, until: str | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each ``run`` event's data until the server ends the stream."""
    params = {"until": until} if until else None
    async with http.stream(
        "GET", f"/runs/{run_id}/events", params=params, timeout=httpx.Timeout(120.0)
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise StreamError(f"events of {run_id}: {response.status_code} {response.text}")
        data: str | None = None
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and data is not None:
                event: dict[str, Any] = json.loads(data)
                data = None
                yield event
