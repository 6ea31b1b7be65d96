"""oc-compat keeps up (issue 11, item 2): the ``kodo oc-compat`` process holds thousands of
prompts and event streams at once, none of them on a thread of its own.

Real processes: the server is started exactly as ``kodo up`` starts it
(:func:`devstack.kodo_procs.start_oc_compat`). The client is a few lines of asyncio
speaking HTTP/1.0 (one request per connection, bodies unchunked): an httpx pool scans
every open connection per request, which at 2,000 held ones cost the test minutes of
CPU. Counts only: every prompt is seen held at once by the server, its OS thread
count stays a handful, abort ends every one. The figures (peak held, RSS, threads)
are printed for the report (``pytest -s``), never asserted as timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from devstack.kodo_procs import Stack, start_oc_compat

pytestmark = pytest.mark.integration

HELD = 2000
"""Prompts held at once: far past any thread pool (cheroot's was 64)."""

STREAMS = 1000
"""Event streams open at once."""

MAX_THREADS = 8
"""OS threads the server may have while it holds everything: a handful, not one each."""

HANG_GUARD_S = 300.0
"""A count that never arrives fails the case instead of hanging it (not a timing claim)."""

GATE = 100
"""Control requests (create, abort) in flight at once."""

HOLD = "[oc:slow=600000]"  # ten minutes: only an abort ends these prompts


@dataclass(frozen=True)
class Compat:
    host: str
    port: int
    pid: int

    async def open(
        self, method: str, path: str, body: object = None, **query: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        """Send one HTTP/1.0 request; the status read, the body left on the reader."""
        target = f"{path}?{urlencode(query)}" if query else path
        data = b"" if body is None else json.dumps(body).encode()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {target} HTTP/1.0\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        writer.write(head.encode() + b"\r\n" + data)
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()).strip():
            pass  # the headers
        return reader, writer, status

    async def call(self, method: str, path: str, body: object = None, **query: str) -> Any:
        """One request; its JSON body (None for 204). Fails on any other status."""
        reader, writer, status = await self.open(method, path, body, **query)
        rest = await reader.read()  # HTTP/1.0: the server closes after the body
        writer.close()
        assert status in (200, 204), f"{method} {path}: HTTP {status} {rest[:200]!r}"
        return json.loads(rest) if rest else None


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    stack = Stack(env=dict(os.environ), log_dir=tmp_path_factory.mktemp("logs"))
    proc = start_oc_compat(stack, seed=11)
    try:
        split = urlsplit(stack.oc_url)
        assert split.hostname is not None
        assert split.port is not None
        yield Compat(split.hostname, split.port, proc.pid)
    finally:
        stack.stop()


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _threads(pid: int) -> int:
    return int(_proc_status(pid)["Threads"])


def _report(label: str, held: int, pid: int) -> None:
    rss_mb = int(_proc_status(pid)["VmRSS"].split()[0]) / 1024
    threads = _threads(pid)
    print(f"\n[compat-scale] {label}: held {held} at once, RSS {rss_mb:.1f} MB, {threads} threads")


async def _gated(items: list[str], one: Callable[[str], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(GATE)

    async def run(item: str) -> Any:
        async with gate:
            return await one(item)

    return list(await asyncio.gather(*(run(item) for item in items)))


async def _sessions(compat: Compat, directory: Path, n: int) -> list[str]:
    async def one(title: str) -> str:
        made = await compat.call("POST", "/session", {"title": title}, directory=str(directory))
        return str(made["id"])

    return await _gated([f"s{i}" for i in range(n)], one)


def _prompt(text: str) -> dict[str, Any]:
    return {"agent": "plan", "parts": [{"type": "text", "text": text}]}


async def _held(compat: Compat, directory: Path) -> tuple[dict[str, Any], int]:
    """``GET /session/status`` of ``directory``, then the server's in-flight count."""
    status = await compat.call("GET", "/session/status", directory=str(directory))
    stats = await compat.call("GET", "/__kodo/stats")
    return status, sum(stats["in_flight"].values())


async def _until_held(compat: Compat, directory: Path, n: int) -> tuple[dict[str, Any], int]:
    deadline = time.monotonic() + HANG_GUARD_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, in_flight = await _held(compat, directory)
        if len(status) >= n and in_flight >= n:
            return status, in_flight
        await asyncio.sleep(0.2)
    pytest.fail(f"the server never held {n} prompts at once: {len(status)} busy")


async def _abort_all(compat: Compat, ids: list[str]) -> None:
    async def one(sid: str) -> None:
        assert await compat.call("POST", f"/session/{sid}/abort") is True

    await _gated(ids, one)


def test_thousands_of_sync_prompts_are_held_at_once_without_a_thread_each(
    compat: Compat, tmp_path: Path
) -> None:
    async def run() -> None:
        ids = await _sessions(compat, tmp_path, HELD)
        sent = [
            asyncio.ensure_future(
                compat.call(
                    "POST",
                    f"/session/{sid}/message",
                    _prompt(f"hold {sid} {HOLD}"),
                    directory=str(tmp_path),
                )
            )
            for sid in ids
        ]
        status, in_flight = await _until_held(compat, tmp_path, HELD)
        assert in_flight == HELD
        assert status == {sid: {"type": "busy"} for sid in ids}
        threads = _threads(compat.pid)
        _report("sync prompts", in_flight, compat.pid)
        assert threads <= MAX_THREADS, f"{threads} OS threads hold {HELD} prompts"
        assert not any(s.done() for s in sent), "a held prompt answered before its abort"

        await _abort_all(compat, ids)
        answers = await asyncio.wait_for(asyncio.gather(*sent), HANG_GUARD_S)
        assert {a["info"]["error"]["name"] for a in answers} == {"MessageAbortedError"}
        assert await _held(compat, tmp_path) == ({}, 0)

    asyncio.run(run())


async def _events(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The stream's events (``data: <json>`` lines; HTTP/1.0, so never chunked)."""
    while line := await reader.readline():
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: ") :])


async def _until_idle(events: AsyncIterator[dict[str, Any]], ids: set[str]) -> list[dict[str, Any]]:
    """The stream's events (unwrapped) until every session in ``ids`` has gone idle."""
    seen: list[dict[str, Any]] = []
    idle: set[str] = set()
    async for event in events:
        seen.append(event)
        payload = event.get("payload", event)
        if payload["type"] == "session.idle":
            idle.add(str(payload["properties"]["sessionID"]))
            if ids <= idle:
                return seen
    pytest.fail(f"the stream ended with {len(ids - idle)} sessions not idle")


def test_thousands_of_async_prompts_are_busy_at_once_and_abort_ends_them_all(
    compat: Compat, tmp_path: Path
) -> None:
    async def run() -> None:
        ids = await _sessions(compat, tmp_path, HELD)
        reader, writer, code = await compat.open("GET", "/event", directory=str(tmp_path))
        assert code == 200
        events = _events(reader)
        assert (await anext(events))["type"] == "server.connected"  # subscribed

        async def send(sid: str) -> None:
            body = _prompt(f"hold {sid} {HOLD}")
            path = f"/session/{sid}/prompt_async"
            assert await compat.call("POST", path, body, directory=str(tmp_path)) is None

        await _gated(ids, send)
        # each turn is registered before its 204: all busy now, none ended
        status, in_flight = await _held(compat, tmp_path)
        assert in_flight == HELD
        assert status == {sid: {"type": "busy"} for sid in ids}
        threads = _threads(compat.pid)
        _report("prompt_async turns", in_flight, compat.pid)
        assert threads <= MAX_THREADS, f"{threads} OS threads hold {HELD} turns"

        await _abort_all(compat, ids)
        seen = await asyncio.wait_for(_until_idle(events, set(ids)), HANG_GUARD_S)
        writer.close()
        assert await _held(compat, tmp_path) == ({}, 0)
        ended = {
            str(e["properties"]["sessionID"])
            for e in seen
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
        (sid,) = await _sessions(compat, tmp_path, 1)
        paths = ["/event" if i % 2 else "/global/event" for i in range(STREAMS)]
        opened = await asyncio.gather(
            *(compat.open("GET", path, directory=str(tmp_path)) for path in paths)
        )
        try:
            assert {code for _r, _w, code in opened} == {200}
            streams = [_events(reader) for reader, _w, _c in opened]
            firsts = await asyncio.gather(*(anext(events) for events in streams))
            assert {e.get("payload", e)["type"] for e in firsts} == {"server.connected"}
            stats = await compat.call("GET", "/__kodo/stats")
            assert stats["event_streams"] >= STREAMS  # closed ones leave at their next write
            threads = _threads(compat.pid)
            _report("event streams", STREAMS, compat.pid)
            assert threads <= MAX_THREADS, f"{threads} OS threads serve {STREAMS} streams"

            prompt = _prompt("plan something")
            await compat.call("POST", f"/session/{sid}/message", prompt, directory=str(tmp_path))
            seen = await asyncio.wait_for(
                asyncio.gather(*(_until_idle(events, {sid}) for events in streams)),
                HANG_GUARD_S,
            )
            for path, events in zip(paths, seen, strict=True):
                if path == "/global/event":  # wrapped with the session's directory
                    wrapped = {e["directory"] for e in events if "directory" in e}
                    assert wrapped == {str(tmp_path.resolve())}
                kinds = [e.get("payload", e)["type"] for e in events]
                assert kinds[-1] == "session.idle"
                assert "message.updated" in kinds
        finally:
            for _reader, writer, _code in opened:
                writer.close()

    asyncio.run(run())
