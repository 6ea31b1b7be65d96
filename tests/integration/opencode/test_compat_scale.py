"""oc-compat keeps up (issue 11, item 2): the ``kodo oc-compat`` process holds thousands of
prompts and event streams at once, none of them on a thread of its own.

Real processes: the server is started exactly as ``kodo up`` starts it
(:func:`devstack.kodo_procs.start_oc_compat`), and an asyncio httpx client opens the
connections. Counts only: every prompt is seen held at once by the server, its OS
thread count stays a handful, abort ends every one. The figures (peak held, RSS,
threads) are printed for the report (``pytest -s``), never asserted as timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.kodo_procs import Stack, start_oc_compat

HELD = 2000
"""Prompts held at once: far past any thread pool (cheroot's was 64)."""

STREAMS = 1000
"""Event streams open at once."""

MAX_THREADS = 8
"""OS threads the server may have while it holds everything: a handful, not one each."""

HANG_GUARD_S = 300.0
"""A count that never arrives fails the case instead of hanging it (not a timing claim)."""

HOLD = "[oc:slow=600000]"  # ten minutes: only an abort ends these prompts


@dataclass(frozen=True)
class Compat:
    url: str
    pid: int


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    stack = Stack(env=dict(os.environ), log_dir=tmp_path_factory.mktemp("logs"))
    proc = start_oc_compat(stack, seed=11)
    try:
        yield Compat(stack.oc_url, proc.pid)
    finally:
        stack.stop()


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _threads(pid: int) -> int:
    return int(_proc_status(pid)["Threads"])


def _rss_mb(pid: int) -> float:
    return int(_proc_status(pid)["VmRSS"].split()[0]) / 1024


def _client(n: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=n + 50, max_keepalive_connections=n + 50)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(HANG_GUARD_S))


async def _sessions(client: httpx.AsyncClient, url: str, directory: Path, n: int) -> list[str]:
    gate = asyncio.Semaphore(100)

    async def one(i: int) -> str:
        async with gate:
            made = await client.post(
                f"{url}/session", params={"directory": str(directory)}, json={"title": f"s{i}"}
            )
        made.raise_for_status()
        return str(made.json()["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _prompt(text: str) -> dict[str, Any]:
    return {"agent": "plan", "parts": [{"type": "text", "text": text}]}


async def _held(client: httpx.AsyncClient, url: str, directory: Path) -> dict[str, Any]:
    """``GET /session/status`` of ``directory`` and the server's in-flight count."""
    status = await client.get(f"{url}/session/status", params={"directory": str(directory)})
    stats = await client.get(f"{url}/__kodo/stats")
    return {"status": status.json(), "in_flight": sum(stats.json()["in_flight"].values())}


async def _until_held(
    client: httpx.AsyncClient, url: str, directory: Path, n: int
) -> dict[str, Any]:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        seen = await _held(client, url, directory)
        if seen["in_flight"] >= n:
            return seen
        await asyncio.sleep(0.2)
    pytest.fail(f"the server never held {n} prompts at once: {seen['in_flight']}")


async def _abort_all(client: httpx.AsyncClient, url: str, ids: list[str], directory: Path) -> None:
    gate = asyncio.Semaphore(100)

    async def one(sid: str) -> None:
        async with gate:
            done = await client.post(
                f"{url}/session/{sid}/abort", params={"directory": str(directory)}
            )
        assert done.json() is True

    await asyncio.gather(*(one(sid) for sid in ids))


def _report(label: str, held: int, pid: int) -> None:
    print(
        f"\n[compat-scale] {label}: held {held} at once, "
        f"RSS {_rss_mb(pid):.1f} MB, {_threads(pid)} OS threads"
    )


def test_thousands_of_sync_prompts_are_held_at_once_without_a_thread_each(
    compat: Compat, tmp_path: Path
) -> None:
    async def run() -> None:
        async with _client(HELD) as client:
            ids = await _sessions(client, compat.url, tmp_path, HELD)
            sent = [
                asyncio.ensure_future(
                    client.post(
                        f"{compat.url}/session/{sid}/message",
                        params={"directory": str(tmp_path)},
                        json=_prompt(f"hold {sid} {HOLD}"),
                    )
                )
                for sid in ids
            ]
            seen = await _until_held(client, compat.url, tmp_path, HELD)
            assert seen["in_flight"] == HELD
            assert seen["status"] == {sid: {"type": "busy"} for sid in ids}
            threads = _threads(compat.pid)
            _report("sync prompts", seen["in_flight"], compat.pid)
            assert threads <= MAX_THREADS, f"{threads} OS threads hold {HELD} prompts"
            assert not any(s.done() for s in sent), "a held prompt answered before its abort"

            await _abort_all(client, compat.url, ids, tmp_path)
            answers = await asyncio.gather(*sent)
            errors = {a.json()["info"]["error"]["name"] for a in answers}
            assert {a.status_code for a in answers} == {200}
            assert errors == {"MessageAbortedError"}
            after = await _held(client, compat.url, tmp_path)
            assert after == {"status": {}, "in_flight": 0}

    asyncio.run(run())


async def _read_events(lines: AsyncIterator[str], out: list[dict[str, Any]], ids: set[str]) -> None:
    """Collect the stream's events until every session in ``ids`` has gone idle."""
    idle: set[str] = set()
    async for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[len("data: ") :])
        out.append(event)
        payload = event.get("payload", event)
        if payload["type"] == "session.idle":
            idle.add(str(payload["properties"]["sessionID"]))
            if ids <= idle:
                return


def test_thousands_of_async_prompts_are_busy_at_once_and_abort_ends_them_all(
    compat: Compat, tmp_path: Path
) -> None:
    async def run() -> None:
        async with _client(HELD) as client:
            ids = await _sessions(client, compat.url, tmp_path, HELD)
            events: list[dict[str, Any]] = []
            async with client.stream(
                "GET", f"{compat.url}/event", params={"directory": str(tmp_path)}
            ) as stream:
                reader = asyncio.ensure_future(_read_events(stream.aiter_lines(), events, set(ids)))
                gate = asyncio.Semaphore(200)

                async def send(sid: str) -> None:
                    async with gate:
                        sent = await client.post(
                            f"{compat.url}/session/{sid}/prompt_async",
                            params={"directory": str(tmp_path)},
                            json=_prompt(f"hold {sid} {HOLD}"),
                        )
                    assert sent.status_code == 204

                await asyncio.gather(*(send(sid) for sid in ids))
                # each turn is registered before its 204: all busy now, none ended
                seen = await _held(client, compat.url, tmp_path)
                assert seen["in_flight"] == HELD
                assert seen["status"] == {sid: {"type": "busy"} for sid in ids}
                threads = _threads(compat.pid)
                _report("prompt_async turns", seen["in_flight"], compat.pid)
                assert threads <= MAX_THREADS, f"{threads} OS threads hold {HELD} turns"

                await _abort_all(client, compat.url, ids, tmp_path)
                await asyncio.wait_for(reader, HANG_GUARD_S)
            after = await _held(client, compat.url, tmp_path)
            assert after == {"status": {}, "in_flight": 0}
            ended = {
                str(e["properties"]["sessionID"])
                for e in events
                if e["type"] == "session.error"
                and e["properties"]["error"]["name"] == "MessageAbortedError"
            }
            assert ended == set(ids)

    asyncio.run(run())


def test_a_thousand_event_streams_each_get_every_event_without_a_thread_each(
    compat: Compat, tmp_path: Path
) -> None:
    """Half the streams follow the directory (``/event``), half every directory
    (``/global/event``); one prompt's events reach all of them."""

    async def run() -> None:
        async with _client(STREAMS) as client:
            (sid,) = await _sessions(client, compat.url, tmp_path, 1)
            stacks = [
                client.stream(
                    "GET",
                    f"{compat.url}/event" if i % 2 else f"{compat.url}/global/event",
                    params={"directory": str(tmp_path)},
                )
                for i in range(STREAMS)
            ]
            opened = await asyncio.gather(*(s.__aenter__() for s in stacks))
            try:
                lines = [r.aiter_lines() for r in opened]
                firsts = await asyncio.gather(*(anext(it) for it in lines))
                first = [json.loads(f.removeprefix("data: ")) for f in firsts]
                assert {e.get("payload", e)["type"] for e in first} == {"server.connected"}
                stats = (await client.get(f"{compat.url}/__kodo/stats")).json()
                assert stats["event_streams"] >= STREAMS
                threads = _threads(compat.pid)
                _report("event streams", stats["event_streams"], compat.pid)
                assert threads <= MAX_THREADS, f"{threads} OS threads serve {STREAMS} streams"

                answer = await client.post(
                    f"{compat.url}/session/{sid}/message",
                    params={"directory": str(tmp_path)},
                    json=_prompt("plan something"),
                )
                assert answer.status_code == 200
                outs: list[list[dict[str, Any]]] = [[] for _ in opened]
                await asyncio.wait_for(
                    asyncio.gather(
                        *(_read_events(it, out, {sid}) for it, out in zip(lines, outs, strict=True))
                    ),
                    HANG_GUARD_S,
                )
                for i, out in enumerate(outs):
                    if i % 2 == 0:  # global: wrapped with the directory
                        assert all(e["directory"] == str(tmp_path.resolve()) for e in out)
                    kinds = [e.get("payload", e)["type"] for e in out]
                    assert kinds[-1] == "session.idle"
            finally:
                await asyncio.gather(
                    *(s.__aexit__(None, None, None) for s in stacks), return_exceptions=True
                )

    asyncio.run(run())
