"""Workers whose clocks disagree with the API's and the database's.

Every timestamp a rule compares (the approval gate, step leases, the reconciler's
hand-over) is taken from the database in the statement, so a worker host whose clock
runs behind or ahead changes nothing a rule decides. And if the step's final record is
refused after its git work, the run ends failed with a diagnostic: never wedged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, text

from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import StepContext, StepOutcome, load_context, run_step
from services.worker.steps.compile import compile_step
from shared.clock import SystemClock
from shared.db.engine import unit_of_work
from shared.db.models import PlanApproval, StepRun
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    commits_on_branch,
    diagnostic,
    new_run,
    read_run,
)

pytestmark = pytest.mark.integration

SKEWS = pytest.mark.parametrize("skew_s", [-2.0, 2.0], ids=["behind", "ahead"])


class SkewedClock(SystemClock):
    """The real clock of a host whose wall time is off by ``skew_s`` seconds."""

    def __init__(self, skew_s: float) -> None:
        self.skew = timedelta(seconds=skew_s)

    def now(self) -> datetime:
        return super().now() + self.skew


def _step_row(rt: Runtime, run_id: str, step: StepId) -> StepRun:
    with rt.sessions() as s:
        row = s.query(StepRun).filter_by(run_id=run_id, step_id=step.value).one()
        s.expunge(row)
        return row


def _approved_on_the_api_host(make_rt: RuntimeFactory, repo: Path) -> str:
    api = make_rt()  # the API host: the real clock
    run_id = new_run(api, repo)
    assert run_step(api, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(api, run_id)
    return run_id


@SKEWS
def test_a_worker_whose_clock_is_skewed_records_its_approved_patch(
    make_rt: RuntimeFactory, repo: Path, skew_s: float
) -> None:
    run_id = _approved_on_the_api_host(make_rt, repo)
    worker = make_rt(SkewedClock(skew_s))
    assert run_step(worker, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert commits_on_branch(repo, run_id) == 1
    assert _step_row(worker, run_id, StepId.APPLY_PATCH).status == "succeeded"


@SKEWS
def test_step_times_are_the_databases_whatever_the_workers_clock_says(
    make_rt: RuntimeFactory, repo: Path, skew_s: float
) -> None:
    worker = make_rt(SkewedClock(skew_s * 3600))  # an hour off: no tolerance hides it
    with worker.sessions() as s:
        before = s.execute(text("SELECT clock_timestamp()")).scalar_one()
    run_id = new_run(worker, repo)
    assert run_step(worker, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    with worker.sessions() as s:
        after = s.execute(text("SELECT clock_timestamp()")).scalar_one()
    row = _step_row(worker, run_id, StepId.COMPILE)
    assert row.finished_at is not None
    assert before <= row.started_at <= row.finished_at <= after
    assert row.duration_ms is not None
    assert 0 <= row.duration_ms <= (after - before).total_seconds() * 1000


@pytest.mark.parametrize(
    ("holder_skew_s", "contender_skew_s"),
    [(-2.0, 0.0), (0.0, 2.0)],
    ids=["holder-behind", "contender-ahead"],
)
def test_a_live_lease_holds_against_a_worker_whose_clock_is_skewed(
    make_rt: RuntimeFactory, repo: Path, holder_skew_s: float, contender_skew_s: float
) -> None:
    holder = make_rt(SkewedClock(holder_skew_s), step_lease_s=1.5)
    contender = make_rt(SkewedClock(contender_skew_s), step_lease_s=1.5)
    run_id = new_run(holder, repo)
    assert load_context(holder, run_id, StepId.COMPILE) is not None
    assert load_context(contender, run_id, StepId.COMPILE) is None
    assert run_step(contender, StepId.COMPILE, run_id, compile_step) == "skipped"


def test_a_reconciler_whose_clock_is_ahead_leaves_a_live_lease_alone(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    worker = make_rt(step_lease_s=30)
    beat = make_rt(SkewedClock(3600), step_lease_s=30)
    run_id = new_run(worker, repo)
    assert load_context(worker, run_id, StepId.COMPILE) is not None
    assert reconcile(beat) == []
    assert _step_row(worker, run_id, StepId.COMPILE).lease_owner != "reconciler"


def test_a_record_refused_after_the_git_work_fails_the_step_with_a_diagnostic(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    run_id = _approved_on_the_api_host(make_rt, repo)
    worker = make_rt()

    def apply_then_lose_the_approval(ctx: StepContext) -> StepOutcome:
        outcome = apply_patch_step(ctx)  # the patch is committed in git
        with unit_of_work(worker.sessions) as s:  # and the gate's row is gone
            s.execute(delete(PlanApproval).where(PlanApproval.run_id == run_id))
        return outcome

    assert run_step(worker, StepId.APPLY_PATCH, run_id, apply_then_lose_the_approval) == "failed"
    assert commits_on_branch(repo, run_id) == 1, "the commit is kept as evidence"
    step = _step_row(worker, run_id, StepId.APPLY_PATCH)
    assert step.status == "failed"
    assert step.lease_expires_at is None
    run = read_run(worker, run_id)
    assert run.status == "failed"
    report = diagnostic(worker, run_id)
    assert report["rule"] == "record_refused"
    assert "without an approval" in report["error"]
    assert report["refused_outcome"]["ok"] is True
    assert report["refused_outcome"]["output"]["commit"]
    assert run_step(worker, StepId.APPLY_PATCH, run_id, apply_patch_step) == "skipped"


def test_an_outcome_the_database_cannot_store_still_ends_the_step_failed(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)

    def failing_with_a_nul_byte(_: StepContext) -> StepOutcome:  # text columns refuse NUL
        return StepOutcome.failed("agent text\x00 with a NUL byte", {"summary": "kept"})

    assert run_step(rt, StepId.COMPILE, run_id, failing_with_a_nul_byte) == "failed"
    assert _step_row(rt, run_id, StepId.COMPILE).status == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "record_refused"
    assert report["refused_outcome"]["error"] == "agent text\x00 with a NUL byte"


def test_an_outcome_holding_a_nul_is_stored_with_the_replacement_character(
    rt: Runtime, repo: Path
) -> None:
    """jsonb cannot hold U+0000; kodo's engine writes it as U+FFFD (shared.db.jsonb_text)
    rather than lose the step's record with it."""
    run_id = new_run(rt, repo)

    def answer_with_a_nul_byte(_: StepContext) -> StepOutcome:
        return StepOutcome(ok=True, output={"summary": "agent text\x00 with a NUL byte"})

    assert run_step(rt, StepId.COMPILE, run_id, answer_with_a_nul_byte) == "waiting_input"
    step = _step_row(rt, run_id, StepId.COMPILE)
    assert step.output == {"summary": "agent text\ufffd with a NUL byte"}
