"""Celery's task lines carry the run id; a step's lines carry the task id.

Through Celery's real tracer (``Task.apply``), whose prerun and postrun signals the
worker's app binds and unbinds the ids on.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from celery import Celery

import services.worker.celery_app  # noqa: F401 - connects the signal receivers under test
from shared.logging import configure_logging


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    configure_logging(json=True, level="INFO")


@pytest.fixture
def app() -> Celery:
    return Celery("ids", set_as_current=False, broker="memory://")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_steps_lines_and_celerys_failure_line_carry_run_and_task_ids(
    app: Celery, out: io.StringIO
) -> None:
    @app.task(name="kodo.CompileST")  # type: ignore[untyped-decorator]
    def step(run_id: str) -> str:
        structlog.get_logger("kodo.step").info("step.started")
        raise RuntimeError("the step broke")

    step.apply(args=["run-1"], task_id="task-1")

    written = lines(out)
    started = next(line for line in written if line["event"] == "step.started")
    assert (started["run_id"], started["task_id"], started["task"]) == (
        "run-1",
        "task-1",
        "kodo.CompileST",
    )
    failure = next(line for line in written if line["logger"] == "celery.app.trace")
    assert failure["level"] == "error"
    assert (failure["run_id"], failure["task_id"]) == ("run-1", "task-1")


def test_housekeeping_lines_carry_the_task_id_and_no_run_id(app: Celery, out: io.StringIO) -> None:
    @app.task(name="kodo.reconcile")  # type: ignore[untyped-decorator]
    def reconcile() -> int:
        logging.getLogger("kodo.reconciler").info("pass")
        return 0

    reconcile.apply(task_id="task-2")

    (line,) = lines(out)
    assert line["task_id"] == "task-2"
    assert "run_id" not in line


def test_the_ids_are_gone_once_the_task_ended(app: Celery, out: io.StringIO) -> None:
    @app.task(name="kodo.deliver")  # type: ignore[untyped-decorator]
    def deliver(run_id: str) -> int:
        return 0

    deliver.apply(args=["run-3"], task_id="task-3")
    structlog.get_logger("kodo.after").info("between tasks")

    (line,) = lines(out)
    assert "task_id" not in line
    assert "run_id" not in line
