"""A step whose provider call another delivery declared unknown does not use the
late answer: the ledger keeps it, the run does not move."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from services.worker.runtime import Runtime
from services.worker.steps.compile import compile_step
from shared.db.models import Artifact, OpenCodeCall, Run, StepRun
from shared.domain.run_machine import StepId
from shared.opencode.calls import OutcomeUnknown, StructuredCall
from shared.opencode.messages import ModelRef
from tests.integration.worker.conftest import new_run, step_in_background
from tests.postgres_calls import calls_on_postgres

pytestmark = pytest.mark.integration


def _sent_call(rt: Runtime, run_id: str) -> OpenCodeCall:
    """The run's one ledger row once its prompt is on the way (its session recorded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with rt.sessions() as s:
            row = s.execute(
                select(OpenCodeCall).where(
                    OpenCodeCall.run_id == run_id, OpenCodeCall.started_at.is_not(None)
                )
            ).scalar_one_or_none()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} sent no call")


def test_a_step_whose_call_was_declared_unknown_meanwhile_stops_and_the_run_stays(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:slow=1500]")
    first, outcome = step_in_background(rt, StepId.COMPILE, run_id, compile_step)
    row = _sent_call(rt, run_id)
    # A second delivery of the same attempt waits the live claim out and declares it.
    impatient = calls_on_postgres(
        rt.daemons.first.client,
        rt.sessions,
        timeout_s=0.1,
        model=ModelRef(rt.settings.oc_provider_id, rt.settings.oc_model_id),
        clock=rt.clock,
        claim_grace_s=0.0,
    )
    same = StructuredCall(
        run_id,
        row.step_id,
        row.attempt,
        row.agent,
        row.request["prompt"],
        row.request["schema"],
        row.request["directory"],
    )
    assert same.op_key == row.op_key
    with pytest.raises(OutcomeUnknown):
        impatient.prompt_structured(same)
    first.join(20)
    assert outcome == ["superseded"]
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert (run.status, run.next_action) == ("compiling", "run:CompileST")
        step = s.execute(select(StepRun).where(StepRun.run_id == run_id)).scalar_one()
        assert step.status == "running", "no success recorded by the late delivery"
        assert s.execute(select(Artifact).where(Artifact.run_id == run_id)).first() is None
        call = s.execute(select(OpenCodeCall).where(OpenCodeCall.run_id == run_id)).scalar_one()
        assert call.status == "succeeded_late"
        assert call.usage is not None
        assert call.usage["total_tokens"] > 0
