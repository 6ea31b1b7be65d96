"""A freeze just after the claimant's row read (``_still_claimed``) never lets a cancelled
run's blocking prompt run to its end (red-team helper-108; failed while the echo was
bounded by the call's age).

helper-106 made a blocking prompt read its row before it leaves and says "the echo
covers a freeze after that read". The echo (``_abort_waking_claimants``) lists a call
only while it is younger than its deadline plus the abort window (``_within``). A
claimant frozen for an hour *after* the read returned CLAIMED (cancel, sweep and
forget happen meanwhile; the session is kept: OC_KEEP_SESSIONS=1) wakes past the echo's
window and sends: nothing reads the row again, no sweep lists the call, and the turn
runs to its end on the cancelled run. The read narrowed the gap; it did not close it.
Staged exactly as tests/integration/worker/test_cancel_long_freeze.py, one call later.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.forget import forget_sessions
from services.worker.steps import base as step_base
from services.worker.steps.apply_patch import apply_patch_step
from shared.domain.run_machine import StepId
from shared.opencode.exactly_once import ExactlyOnceCalls
from tests.integration.worker.conftest import (
    RuntimeFactory,
    step_in_background,
    wait_lease_lapsed,
)
from tests.integration.worker.test_cancel_unsent_claims import (
    _apply_calls,
    _approved_run,
    _cancel,
)

pytestmark = pytest.mark.integration

SLOW_MS = 4000


def test_a_freeze_after_the_row_read_still_lets_the_prompt_run(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _approved_run(make_rt, repo, f"Add multiply to calc.py [oc:slow={SLOW_MS}]")
    rt = make_rt(oc_timeout_ms=20000, step_lease_s=1, oc_keep_sessions=True)

    frozen = threading.Event()
    reached = threading.Event()
    thaw = threading.Event()
    real_beat = step_base.LeaseKeeper.beat

    def beat(self: step_base.LeaseKeeper) -> bool:
        return True if frozen.is_set() else real_beat(self)

    monkeypatch.setattr(step_base.LeaseKeeper, "beat", beat)
    real_still_claimed = ExactlyOnceCalls._still_claimed

    def still_claimed_then_freeze(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_still_claimed(self, *args, **kwargs)  # read: CLAIMED, this session
        frozen.set()
        reached.set()
        thaw.wait(60)  # the process freezes here, between the read and the send
        frozen.clear()
        return result

    monkeypatch.setattr(ExactlyOnceCalls, "_still_claimed", still_claimed_then_freeze)

    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    assert reached.wait(30), "ApplyPatchST never read its row"
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)
    wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
    assert abort_missed_calls(rt) == [run_id]
    forget_sessions(rt)
    (swept,) = _apply_calls(rt, run_id)
    assert swept["status"] == "aborted", swept

    # the freeze lasts an hour: the database's clock moved on meanwhile
    with rt.sessions() as s, s.begin():
        s.execute(
            text(
                "UPDATE app.opencode_calls SET created_at = created_at - interval '1 hour',"
                " started_at = started_at - interval '1 hour'"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        )

    thaw.set()  # the process wakes: its blocking prompt would leave now
    for _ in range(20):  # the reconciler's passes (sweep + echo) while the turn runs
        if not worker.is_alive():
            break
        abort_missed_calls(rt)
        worker.join(0.5)
    worker.join(30)
    assert not worker.is_alive()
    (call,) = _apply_calls(rt, run_id)
    assert call["status"] == "aborted", call  # as the sweep recorded it, never again
    with rt.sessions() as s:
        directory = s.execute(
            text(
                "SELECT request->>'directory' FROM app.opencode_calls"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).scalar_one()
    last = rt.daemons.first.client.last_message(call["session_id"], directory=directory)
    assert last is not None, "the prompt left after the read: the freeze came after it"
    assert last.info.get("error") is not None, (
        "the cancelled run's blocking prompt, sent after an hour's freeze that followed its"
        f" row read, ran to its end at the daemon: step outcome {outcome}"
    )
