"""Log levels and formats: httpx's per-request lines (the intended paging 400 among them)
at DEBUG, and ``KODO_LOG_FORMAT=console`` lines for a person."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from shared.config import ConfigError, Settings
from shared.logging import configure_logging


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    configure_logging(json=True, level="INFO")  # back to stderr


def _paging_request() -> None:
    """A real httpx request answered 400, as the daemon answers the paging's last page."""
    transport = httpx.MockTransport(lambda _: httpx.Response(400, text="bad request"))
    with httpx.Client(transport=transport, base_url="http://oc.invalid") as client:
        client.get("/session/s1/message", params={"limit": "3"})


def test_httpx_request_lines_are_not_written_at_info(restore: None) -> None:
    out = io.StringIO()
    configure_logging(json=True, level="INFO", stream=out)

    _paging_request()
    logging.getLogger("httpx").warning("a real problem")

    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["a real problem"]


def test_httpx_request_lines_are_written_at_debug_as_debug(restore: None) -> None:
    out = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=out)

    _paging_request()

    requests = [
        line
        for line in map(json.loads, out.getvalue().splitlines())
        if line["logger"] == "httpx" and str(line["event"]).startswith("HTTP Request")
    ]
    assert len(requests) == 1
    assert requests[0]["level"] == "debug"
    assert "400" in str(requests[0]["event"])


def test_console_format_is_plain_text_with_the_bound_ids(restore: None) -> None:
    out = io.StringIO()
    configure_logging(json=False, level="INFO", stream=out)

    with structlog.contextvars.bound_contextvars(run_id="r1"):
        structlog.get_logger("kodo.test").info("step.started", step_id="CompileST")

    (line,) = out.getvalue().splitlines()
    assert not line.startswith("{")
    assert "step.started" in line
    assert "run_id=r1" in line
    assert "step_id=CompileST" in line
    assert "\x1b[" not in line  # no colour codes when the stream is not a terminal


def test_log_format_setting_defaults_to_json_and_accepts_console() -> None:
    assert Settings.from_env({}).log_json
    console = Settings.from_env({"KODO_LOG_FORMAT": "Console"})
    assert console.log_format == "console"
    assert not console.log_json


def test_an_unknown_log_format_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="KODO_LOG_FORMAT must be json or console"):
        Settings.from_env({"KODO_LOG_FORMAT": "xml"})


def test_console_lines_carry_no_raw_control_character_whoever_wrote_the_text(
    restore: None,
) -> None:
    """A console line is read on a terminal: an agent's path in an exception's message
    or a field (a step's crash, a stdlib record) could set the operator's clipboard
    (OSC 52) or erase the line to pose as another; each control character is shown
    escaped, the traceback's own lines kept."""
    out = io.StringIO()
    configure_logging(json=False, level="INFO", stream=out)
    hostile = "calc.py\x1b]52;c;cHduZWQ=\x07\x1b[2K\rstep ok\u202e"

    try:
        raise ValueError(f"cannot read {hostile}")
    except ValueError:
        structlog.get_logger("kodo.step").exception("step.crashed", path=hostile)
    logging.getLogger("celery").warning("task failed: %s", hostile)

    shown = out.getvalue()
    assert [c for c in ("\x1b", "\x07", "\r", "\u202e") if c in shown] == []
    assert "ValueError: cannot read calc.py\\x1b]52;c;cHduZWQ=\\x07" in shown
    assert "task failed: calc.py\\x1b]52;c;cHduZWQ=\\x07" in shown
    assert "Traceback (most recent call last):\n" in shown
