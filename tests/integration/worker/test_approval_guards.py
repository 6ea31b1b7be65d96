"""DecideST and ExecuteST refuse a run whose current plan digest has no approval.

ApplyPatchST's approval is checked by a database trigger; the two steps after it check
again when they load the run. Here the approval disappears (its row is gone) or no
longer matches (the run's digest moved) between ApplyPatchST and the next step: the
step fails the run closed, naming the rule, with no provider call and no command run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.db.engine import unit_of_work
from shared.db.models import Run
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run, prompts_at_server
from tests.integration.worker.test_execute_step import PROBE, decided

pytestmark = pytest.mark.integration

RULE = "approved_plan_required"


def _approval_withdrawn(rt: Runtime, run_id: str) -> None:
    """The approval row of the run's plan is gone (as if never recorded)."""
    with unit_of_work(rt.sessions) as s:
        s.execute(text("DELETE FROM app.plan_approvals WHERE run_id = :r"), {"r": run_id})


def _digest_moved(rt: Runtime, run_id: str) -> None:
    """The run's plan digest is no longer the one the approver approved."""
    with unit_of_work(rt.sessions) as s:
        s.execute(
            text("UPDATE app.runs SET plan_sha256 = :d WHERE id = :r"),
            {"d": "0" * 64, "r": run_id},
        )


UNAPPROVED: dict[str, Callable[[Runtime, str], None]] = {
    "approval missing": _approval_withdrawn,
    "digest differs": _digest_moved,
}


def _deciding(rt: Runtime, repo: Path) -> str:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    return run_id


def _calls_of(rt: Runtime, run_id: str, step: StepId) -> int:
    with rt.sessions() as s:
        count: int = s.execute(
            text("SELECT count(*) FROM app.opencode_calls WHERE run_id = :r AND step_id = :s"),
            {"r": run_id, "s": step.value},
        ).scalar_one()
    return count


def _assert_failed_by_the_rule(rt: Runtime, run_id: str) -> None:
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.status == "failed"
        assert (run.error or "").startswith(f"{RULE}: ")
    assert diagnostic(rt, run_id)["rule"] == RULE


@pytest.mark.parametrize("unapprove", UNAPPROVED.values(), ids=UNAPPROVED.keys())
def test_decide_refuses_a_plan_without_a_matching_approval_and_asks_no_model(
    rt: Runtime, repo: Path, unapprove: Callable[[Runtime, str], None]
) -> None:
    run_id = _deciding(rt, repo)
    prompts = prompts_at_server(rt)
    unapprove(rt, run_id)

    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "failed"

    _assert_failed_by_the_rule(rt, run_id)
    assert _calls_of(rt, run_id, StepId.DECIDE) == 0, "no provider call was claimed"
    assert prompts_at_server(rt) == prompts, "oc-compat was asked nothing"


@pytest.mark.parametrize("unapprove", UNAPPROVED.values(), ids=UNAPPROVED.keys())
def test_execute_refuses_a_plan_without_a_matching_approval_and_runs_nothing(
    rt: Runtime, repo: Path, unapprove: Callable[[Runtime, str], None]
) -> None:
    run_id = decided(rt, repo, ["python3", "-c", PROBE])
    unapprove(rt, run_id)

    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"

    _assert_failed_by_the_rule(rt, run_id)
    with rt.sessions() as s:
        worktree = s.execute(
            text("SELECT worktree_path FROM app.runs WHERE id = :r"), {"r": run_id}
        ).scalar_one()
        outputs = s.execute(
            text(
                "SELECT count(*) FROM app.artifacts"
                " WHERE run_id = :r AND name = 'command-output.txt'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert not (Path(worktree) / "ran.txt").exists(), "the command never ran"
    assert outputs == 0, "no command output was recorded"
