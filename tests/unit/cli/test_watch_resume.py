"""`kodo run watch` resumes a broken event stream with Last-Event-ID instead of polling.

Served by a small local HTTP server that speaks the API's two routes the watch uses:
the first stream sends one event (id 7) and closes; the reconnect must name event 7.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli.main import cli
from tests.served import served


class FlakyApi(ThreadingHTTPServer):
    """GET /runs/r1 answers the current state; each events stream moves it one status on."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = ["applying", "succeeded"]
        self.status = "compiling"
        self.last_event_ids: list[str | None] = []
        self.renewals = 0  # streams ended with ``event: reconnect``

    def run(self) -> dict[str, Any]:
        return {"runId": "r1", "status": self.status, "lastStep": None, "steps": []}


class Handler(BaseHTTPRequestHandler):
    server: FlakyApi

    def do_GET(self) -> None:
        if self.path == "/runs/r1/events":
            self.server.last_event_ids.append(self.headers.get("Last-Event-ID"))
            self.server.status = self.server.statuses.pop(0)
            seq = 6 + len(self.server.last_event_ids)
            frame = f"id: {seq}\nevent: run\ndata: {json.dumps(self.server.run())}\n\n"
            if self.server.renewals:  # the API's KODO_SSE_MAX_S: a clean end, asked for
                self.server.renewals -= 1
                frame += "event: reconnect\ndata: {}\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(frame.encode())  # then the connection closes: the stream broke
            return
        body = json.dumps(self.server.run()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        """Quiet: the test reads what the server recorded."""


@pytest.fixture
def flaky_api() -> Iterator[FlakyApi]:
    with served(FlakyApi()) as server:
        yield server


def test_a_broken_stream_is_resumed_after_the_last_event_seen(flaky_api: FlakyApi) -> None:
    url = f"http://127.0.0.1:{flaky_api.server_address[1]}"

    watched = CliRunner().invoke(
        cli, ["run", "watch", "r1", "--api-url", url, "--token", "t", "--timeout", "20"]
    )

    assert watched.exit_code == 0, watched.output
    assert flaky_api.last_event_ids == [None, "7"], "the reconnect named the last event"
    assert "status=applying" in watched.output
    assert "run r1 succeeded" in watched.output
    assert "the event stream ended; resuming after event 7" in watched.output


def test_streams_the_api_renews_are_resumed_without_end_and_never_fall_back_to_polling(
    flaky_api: FlakyApi,
) -> None:
    """A watch lasts as long as the run waits (hours for an approval); the API renews
    each stream after KODO_SSE_MAX_S. Those ends are no breaks: more of them than
    STREAM_RESUMES still resume the stream, never poll."""
    flaky_api.statuses = ["waiting_input"] * 6 + ["succeeded"]
    flaky_api.renewals = 6
    url = f"http://127.0.0.1:{flaky_api.server_address[1]}"

    watched = CliRunner().invoke(
        cli,
        ["run", "watch", "r1", "--follow", "--api-url", url, "--token", "t", "--timeout", "20"],
    )

    assert watched.exit_code == 0, watched.output
    assert flaky_api.last_event_ids == [None, *(str(n) for n in range(7, 13))]
    assert "run r1 succeeded" in watched.output
    assert "polling" not in watched.output
    assert "resuming after" not in watched.output, "a renewal is not reported as a break"
