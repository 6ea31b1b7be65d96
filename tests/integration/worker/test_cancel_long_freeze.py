"""A cancelled run's blocking prompt never runs to its end, however long its claimant was
frozen, before or after its last read of the row (red-team helpers 106 and 108; each
case failed on the code before its fix).

The echo (``_abort_waking_claimants``) once followed a recorded call only while it was
younger than its deadline plus the abort window. A claimant frozen longer than that (a
laptop closed for the night with ``kodo up`` running, a VM paused for an hour) woke and
sent its blocking prompt, and with the session kept (OC_KEEP_SESSIONS=1) the turn ran to
its end on the cancelled run, billed. Staged by tests.integration.worker.freezing, then
the call's claim time is set one hour back, what the database reads after the freeze.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.forget import forget_sessions
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import (
    RuntimeFactory,
    step_in_background,
    wait_lease_lapsed,
)
from tests.integration.worker.freezing import call_directory, freeze_claimants
from tests.integration.worker.test_cancel_unsent_claims import (
    _apply_calls,
    _approved_run,
    _cancel,
    _stats,
)

pytestmark = pytest.mark.integration

SLOW_MS = 4000


@pytest.mark.parametrize(
    "after", ["recording the session", "the last read of the row"], ids=["before", "after"]
)
def test_a_blocking_prompt_never_runs_to_its_end_after_an_hour_s_freeze(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """Frozen before its last read of the row, the prompt is never sent (the read finds
    the call recorded: red-team helper-106); frozen after it, the prompt leaves and the
    echo cuts it, since the thawed claimant renews its lease (helper-108: an echo bounded
    by the call's age had stopped looking an hour before)."""
    run_id = _approved_run(make_rt, repo, f"Add multiply to calc.py [oc:slow={SLOW_MS}]")
    rt = make_rt(oc_timeout_ms=20000, step_lease_s=1, oc_keep_sessions=True)
    freeze = freeze_claimants(rt, monkeypatch, after=after)  # type: ignore[arg-type]

    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    freeze.wait_reached()
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)
    wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
    assert abort_missed_calls(rt) == [run_id]
    forget_sessions(rt)
    (swept,) = _apply_calls(rt, run_id)
    assert swept["status"] == "aborted", swept
    _an_hour_passes(rt, run_id)

    freeze.thaw.set()  # the process wakes: its blocking prompt would leave now
    for _ in range(20):  # the reconciler's passes (sweep + echo) while the turn runs
        if not worker.is_alive():
            break
        abort_missed_calls(rt)
        worker.join(0.5)
    worker.join(30)
    assert not worker.is_alive()
    (call,) = _apply_calls(rt, run_id)
    assert call["status"] == "aborted", call  # as the sweep recorded it, never again
    sent = _stats(rt)["by_title"].get(f"kodo ApplyPatchST {run_id} #1")
    if after == "recording the session":
        assert not sent, f"the prompt left though its row was recorded: {outcome}"
        return
    client = rt.daemons.first.client
    last = client.last_message(call["session_id"], directory=call_directory(rt, run_id))
    assert sent, "the freeze came after the read: the prompt left"
    assert last is not None
    assert last.info.get("error") is not None, (
        f"the cancelled run's blocking prompt ran to its end at the daemon: {outcome}"
    )


def _an_hour_passes(rt: Runtime, run_id: str) -> None:
    """The database's clock moves on an hour while the claimant is frozen."""
    with rt.sessions() as s, s.begin():
        s.execute(
            text(
                "UPDATE app.opencode_calls SET created_at = created_at - interval '1 hour',"
                " started_at = started_at - interval '1 hour'"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        )
