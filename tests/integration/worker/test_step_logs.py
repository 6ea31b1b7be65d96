"""Every log line written while a step runs carries the run and step ids; call lines
also carry the op_key and attempt, so one grep finds a run's whole story."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId

from .conftest import new_run

pytestmark = pytest.mark.integration


def test_lines_logged_during_a_step_carry_its_ids(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"

    assert lines, "the step logged nothing"
    for line in lines:
        assert (line["run_id"], line["step_id"]) == (run_id, "CompileST"), line
    [call] = [line for line in lines if line["event"] == "oc.call"]
    assert len(call["op_key"]) == 64
    assert call["attempt"] == 1
    assert structlog.contextvars.get_contextvars() == {}, "the ids must not leak past the step"
