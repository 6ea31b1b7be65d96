"""``kodo run watch``'s last line (``Error: run r1 ended failed: <error>``) was printed by
click as one row, whole (red-team helper-108; failed while it was). The run's error
quotes agent text (a plan's path in a plan_base rejection: spaces allowed), so a
terminal 80 columns wide wraps it and draws a row that starts with the agent's text
(here a forged ``run r1 succeeded``).
helper-106 folded the same error under its label in ``kodo run status`` and the live
watch display (views.run_view), but not in this final line (services/cli/watch.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from services.cli.main import cli
from tests.served import served

COLUMNS = 80
FORGED = "run r1 succeeded (branch kodo/r1)"
PREFIX = "Error: run r1 ended failed: no valid plan after 3 attempts: the last was rejected ("
LEAD = PREFIX + "plan_base: calc.py"  # what precedes the padding on the printed line
PATH = "calc.py" + " " * (2 * COLUMNS - len(LEAD)) + FORGED
ERROR = PREFIX.removeprefix("Error: run r1 ended failed: ") + f"plan_base: {PATH} is not a file)"


class FailedApi(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        run = {
            "runId": "r1",
            "status": "failed",
            "lastStep": "CompileST",
            "steps": [],
            "error": ERROR,
        }
        if self.path.endswith("/events"):
            body = f"id: 1\nevent: run\ndata: {json.dumps(run)}\n\n".encode()
            ctype = "text/event-stream"
        else:
            body = json.dumps(run).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def failed_api() -> Iterator[FailedApi]:
    with served(FailedApi()) as server:
        yield server


def test_watch_final_error_row_never_starts_with_the_agents_text(failed_api: FailedApi) -> None:
    url = f"http://127.0.0.1:{failed_api.server_address[1]}"
    watched = CliRunner().invoke(
        cli, ["run", "watch", "r1", "--api-url", url, "--token", "t", "--timeout", "10"]
    )
    assert watched.exit_code == 1, watched.output
    rows: list[str] = []
    for line in watched.output.splitlines():  # a terminal 80 columns wide wraps each line
        while len(line) > COLUMNS:
            rows.append(line[:COLUMNS])
            line = line[COLUMNS:]
        rows.append(line)
    forged = [r for r in rows if r.startswith(FORGED)]  # a row of its own, at column 0
    assert forged == [], "\n".join(rows)
