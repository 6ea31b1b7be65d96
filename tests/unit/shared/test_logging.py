"""``configure_logging``: JSON lines, from structlog and stdlib alike, with bound ids."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import configure_logging


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    configure_logging(json=True, level="INFO")  # back to stderr


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_and_stdlib_lines_are_json_carrying_the_bound_ids(out: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(run_id="r1", step_id="CompileST"):
        structlog.get_logger("kodo.test").info("step.started", attempt=2)
        logging.getLogger("celery.test").warning("from %s", "stdlib")

    first, second = lines(out)
    assert first["event"] == "step.started"
    assert (first["run_id"], first["step_id"], first["attempt"]) == ("r1", "CompileST", 2)
    assert (first["level"], first["logger"]) == ("info", "kodo.test")
    assert second["event"] == "from stdlib"
    assert (second["run_id"], second["level"]) == ("r1", "warning")
    assert "timestamp" in second


def test_configuring_twice_keeps_one_handler(out: io.StringIO) -> None:
    configure_logging(json=True, stream=out)

    logging.getLogger("x").info("once")

    assert [line["event"] for line in lines(out)] == ["once"]


def test_secrets_are_redacted_from_every_line_whoever_logs_them(out: io.StringIO) -> None:
    key = "sk-" + "a1b2c3d4e5f6g7h8i9j0k1l2"
    structlog.get_logger("kodo.test").info("calling", api_key="plain", prompt=f"use {key}")
    logging.getLogger("celery.test").warning("header Authorization: Bearer %s", "x" * 24)

    first, second = lines(out)
    assert first["api_key"] == "[REDACTED]"
    assert key not in json.dumps(first)
    assert "x" * 24 not in second["event"]


def test_per_delivery_chatter_is_dropped_and_failures_still_pass(out: io.StringIO) -> None:
    """Celery's receipt and success lines and httpx's request lines repeat what kodo's
    step and ledger lines say; their errors are kept."""
    for name in ("celery.worker.strategy", "celery.app.trace", "httpx"):
        logging.getLogger(name).info("chatter")
    logging.getLogger("celery.app.trace").error("Task kodo.CompileST raised")

    assert [line["event"] for line in lines(out)] == ["Task kodo.CompileST raised"]


def test_a_kodo_logger_keeps_its_stdlib_level_as_the_token_cli_sets_it(
    out: io.StringIO,
) -> None:
    """kodo's structlog lines are not stdlib records, yet the level of the stdlib logger
    of the same name decides them: the token CLI lets only ``kodo.audit`` below WARNING."""
    configure_logging(json=True, level="WARNING", stream=out)
    logging.getLogger("kodo.audit").setLevel(logging.INFO)
    try:
        structlog.get_logger("kodo.audit").info("audit", action="token.create")
        structlog.get_logger("kodo.step").info("step.started")
        structlog.get_logger("kodo.step").warning("step.abandoned")
    finally:
        logging.getLogger("kodo.audit").setLevel(logging.NOTSET)

    assert [(line["event"], line["logger"]) for line in lines(out)] == [
        ("audit", "kodo.audit"),
        ("step.abandoned", "kodo.step"),
    ]


def test_an_exception_logged_carries_its_traceback_and_is_redacted(out: io.StringIO) -> None:
    key = "sk-" + "z9y8x7w6v5u4t3s2r1q0p9o8"
    try:
        raise RuntimeError(f"the daemon said {key}")
    except RuntimeError:
        structlog.get_logger("kodo.step").exception("step.crashed")

    (line,) = lines(out)
    assert (line["event"], line["level"]) == ("step.crashed", "error")
    assert "RuntimeError" in str(line["exception"])
    assert key not in json.dumps(line)


def test_lines_from_structlog_and_stdlib_in_many_threads_never_interleave(
    out: io.StringIO,
) -> None:
    """Both kinds of line are written under the one handler's lock."""

    def write(i: int) -> None:
        for j in range(200):
            structlog.get_logger("kodo.test").info("kodo", n=i, j=j, pad="x" * 300)
            logging.getLogger("celery.test").warning("stdlib %d %d %s", i, j, "y" * 300)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    parsed = lines(out)  # each line whole JSON, or json.loads raises
    assert len(parsed) == 8 * 200 * 2
    assert sum(1 for line in parsed if line["event"] == "kodo") == 8 * 200
