"""A cancelled run's blocking prompt never runs to its end, however long its claimant was
frozen (red-team helper-106; failed before the claimant read its row before sending).

helper-102's echo (``_abort_waking_claimants``) aborts again the session of a cancelled
run's recorded call whose claimant may still wake, but only while the call is younger
than its deadline plus the abort window (``oc_timeout_ms/1000 + ABORT_WINDOW_S``,
``LedgerRepo._within``). A claimant frozen longer than that (a laptop closed for the
night with ``kodo up`` running, a VM paused for an hour, a container checkpointed)
wakes, and between ``mark_started`` and ``_send`` nothing checks the row or the run:
the blocking prompt leaves, no sweep lists the call any more, and with the session
kept (OC_KEEP_SESSIONS=1) the turn runs to its end on the cancelled run, editing its
worktree, billed.

Staged as helper-102's test is (the claimant stalled after ``mark_started``, its lease
renewer silent), then the clock of the freeze is moved on: the call's claim time is set
one hour back, what the database reads after a one-hour freeze.
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
from tests.integration.worker.conftest import (
    RuntimeFactory,
    step_in_background,
    wait_lease_lapsed,
)
from tests.integration.worker.test_cancel_unsent_claims import (
    _apply_calls,
    _approved_run,
    _cancel,
    _stats,
)

pytestmark = pytest.mark.integration

SLOW_MS = 4000


def test_a_blocking_prompt_sent_after_a_freeze_longer_than_the_window_is_cut(
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
    ledger = rt.oc.ledger
    real_mark_started = ledger.mark_started

    def mark_started_then_freeze(*args: Any, **kwargs: Any) -> Any:
        result = real_mark_started(*args, **kwargs)
        frozen.set()
        reached.set()
        thaw.wait(60)
        frozen.clear()
        return result

    ledger.mark_started = mark_started_then_freeze  # type: ignore[method-assign]

    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    assert reached.wait(30), "ApplyPatchST never recorded its session"
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
    worker.join(30)
    assert not worker.is_alive()
    title = f"kodo ApplyPatchST {run_id} #1"
    assert not _stats(rt)["by_title"].get(title), (
        "the cancelled run's blocking prompt left after a freeze longer than the call's"
        " deadline plus the abort window (no sweep lists the call again, so nothing could"
        f" cut it): step outcome {outcome}"
    )
    (call,) = _apply_calls(rt, run_id)
    assert call["status"] == "aborted", call  # as the sweep recorded it, never again
