"""An answer over KODO_MAX_ANSWER_BYTES is refused before parsing, and recorded as such.

Every agent answer is written by an attacker: the body is read in chunks up to the cap
and the connection dropped past it, so the size of what the model sends never decides
the worker's memory. Off-schema answers within the cap are cut in the error text.
"""

from __future__ import annotations

import gzip
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.sample_repo import create_sample_repo
from shared.db.models import OpenCodeCall
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, ContractViolation, validate_answer
from shared.opencode.calls import CallFailed, StructuredCall
from shared.opencode.client import AnswerTooLarge, OpenCodeClient
from shared.opencode.errors import OpenCodePermanentError
from standins.oc_compat import running_server
from tests.factories import RunFactory
from tests.postgres_calls import calls_on_postgres

CAP = 256 * 1024


class _Flood(BaseHTTPRequestHandler):
    """``/global/health``: a Content-Length past the cap; anything else: 64 MB, chunked."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/global/health"):
            self.send_header("Content-Length", str(100 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b'{"healthy": true, "pad": "')
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(1024):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            return  # the client hung up at its cap: that is the point

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def flood_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flood)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_body_declaring_more_than_the_cap_is_refused_unread(flood_url: str) -> None:
    with (
        OpenCodeClient(flood_url, timeout_s=5, max_answer_bytes=CAP) as client,
        pytest.raises(AnswerTooLarge, match=f"KODO_MAX_ANSWER_BYTES={CAP}"),
    ):
        client.health()


def test_an_endless_body_is_cut_off_at_the_cap_and_memory_stays_near_it(
    flood_url: str, tmp_path: Path
) -> None:
    tracemalloc.start()
    try:
        with (
            OpenCodeClient(flood_url, timeout_s=10, max_answer_bytes=CAP) as client,
            pytest.raises(AnswerTooLarge, match="passed 262144 bytes"),
        ):
            client.get_session("ses_flood", directory=str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * CAP, f"reading a 64 MB body peaked at {peak} bytes"


@pytest.mark.integration
def test_an_oversize_plan_is_refused_unjudged_naming_the_cap(
    sessions: sessionmaker[Session], db: Session, tmp_path: Path
) -> None:
    run = RunFactory()
    db.commit()
    repo = create_sample_repo(tmp_path / "repo")
    prompt = "Add a docstring to calc.py [oc:huge=3000000]"
    call = StructuredCall(run.id, "CompileST", 1, "plan", prompt, PLAN_OUTPUT_SCHEMA, str(repo))
    with running_server(seed=5) as url:
        client = OpenCodeClient(url, timeout_s=20, max_answer_bytes=CAP)
        wrapper = calls_on_postgres(client, sessions, timeout_s=20)
        try:
            with pytest.raises(CallFailed) as failed:
                wrapper.prompt_structured(call)
        finally:
            wrapper.close()
            client.close()
    with sessions() as s:
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == call.op_key)).scalar_one()

    assert failed.value.kind == "refused", "its steps were never judged: no other attempt"
    assert failed.value.error_name == "TurnNotInspectable"
    assert (row.status, row.error_name, row.response) == ("failed", "TurnNotInspectable", None)
    assert row.error is not None
    assert f"KODO_MAX_ANSWER_BYTES={CAP}" in row.error


def test_a_schema_violation_quotes_the_rule_not_the_whole_oversize_value() -> None:
    answer = {"design": "d" * 1_000_000, "files": [], "risks": ["r"] * 500, "tests": []}
    with pytest.raises(ContractViolation) as violated:
        validate_answer(PLAN_OUTPUT_SCHEMA, answer)
    text = str(violated.value)

    assert len(text) < 5_000
    assert "breaks maxLength 20000" in text
    assert "risks" in text


def _gzip_bomb() -> bytes:
    """~300 bytes that inflate to 256 MB through ``Content-Encoding: gzip, gzip``."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [inner.compress(block) for _ in range(256)]
    once = b"".join(parts) + inner.flush()
    return gzip.compress(once, 9)


class _Hostile(BaseHTTPRequestHandler):
    """``/global/health``: a nested gzip bomb; anything else: JSON nested 100 000 deep."""

    protocol_version = "HTTP/1.1"
    bomb = b""

    def do_GET(self) -> None:
        if self.path.startswith("/global/health"):
            body, encoding = self.bomb, "gzip, gzip"
        else:
            body, encoding = b"[" * 100_000 + b"]" * 100_000, "identity"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    _Hostile.bomb = _gzip_bomb()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_compressed_answer_is_refused_uninflated_so_a_nested_gzip_bomb_costs_nothing(
    hostile_url: str,
) -> None:
    """Attack: 300 bytes under any cap, ``gzip, gzip``; httpx inflated each chunk whole."""
    assert len(_Hostile.bomb) < 2_000
    peaks = []
    for _ in range(3):  # tracemalloc sees every thread: the least of three is this call's
        tracemalloc.start()
        try:
            with (
                OpenCodeClient(hostile_url, timeout_s=10, max_answer_bytes=CAP) as client,
                pytest.raises(AnswerTooLarge, match="came compressed"),
            ):
                client.health()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert min(peaks) < 8 * CAP, f"a 300-byte answer peaked at {peaks} bytes"


def test_an_answer_nested_deeper_than_python_recurses_is_a_permanent_error_not_a_crash(
    hostile_url: str, tmp_path: Path
) -> None:
    """Attack: 200 KB of ``[[[[...`` fits the cap; json raised RecursionError, uncaught.
    Now its shape is refused before parsing (depth over 64), a permanent error still."""
    with (
        OpenCodeClient(hostile_url, timeout_s=10, max_answer_bytes=CAP) as client,
        pytest.raises(OpenCodePermanentError, match=r"answer misshapen: .* deeper than 64"),
    ):
        client.get_session("ses_deep", directory=str(tmp_path))
