"""The cancel sweep's echo reaches every cancelled run's waking claimant, not only the
first SWEEP_LIMIT by run id (red-team helper-106; failed before the echo rotated).

``LedgerRepo.runs_with_waking_claimants`` lists at most SWEEP_LIMIT (20) runs, ordered
by run id, and a run stays listed for the whole window (its call stays ``aborted`` with
its lease lapsed: nothing takes it off the list, unlike the main sweep's ``sent`` calls,
which are recorded and leave). When more runs than that have frozen claimants (a paused
worker VM running many runs, all cancelled in an incident), every pass echoes the same
first 20 and never the rest: when the VM resumes, their blocking prompts run to the end
on cancelled runs, billed.

Staged with two runs and SWEEP_LIMIT set to 1 (the same arithmetic as 21 runs and 20),
each claimant frozen as helper-102's test freezes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.worker import cancel as cancel_mod
from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.forget import forget_sessions
from services.worker.steps.apply_patch import apply_patch_step
from shared.domain.run_machine import StepId
from shared.opencode.errors import OpenCodeError
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


def test_every_cancelled_runs_waking_claimant_is_cut_whatever_its_run_id(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancel_mod, "SWEEP_LIMIT", 1)
    runs = [
        _approved_run(make_rt, repo, f"Add multiply to calc.py [oc:slow={SLOW_MS}]")
        for _ in range(2)
    ]
    rt = make_rt(oc_timeout_ms=20000, step_lease_s=1, oc_keep_sessions=True)

    # each claimant freezes after its last read of the row, just before its prompt
    # leaves: only the echo can cut it then
    freeze = freeze_claimants(rt, monkeypatch, after="the last read of the row")

    workers = [
        step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) for run_id in runs
    ]
    freeze.wait_reached(2)
    for run_id in runs:
        assert _cancel(rt, run_id) is True
        abort_inflight_calls(rt, run_id)
    for run_id in runs:
        wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
    for _ in range(4):  # passes until the main sweep recorded both (one run a pass)
        abort_missed_calls(rt)
        forget_sessions(rt)
    for run_id in runs:
        (swept,) = _apply_calls(rt, run_id)
        assert swept["status"] == "aborted", swept

    freeze.thaw.set()  # the worker wakes: both blocking prompts leave
    end = time.monotonic() + 2 * SLOW_MS / 1000 + 10
    while any(w.is_alive() for w, _ in workers) and time.monotonic() < end:
        abort_missed_calls(rt)  # the reconciler keeps passing
        forget_sessions(rt)
        time.sleep(0.3)
    for w, _ in workers:
        w.join(30)
    for run_id in runs:  # both prompts did leave
        assert _stats(rt)["by_title"].get(f"kodo ApplyPatchST {run_id} #1") == 1

    client = rt.daemons.first.client
    ran_to_end = []
    for run_id in runs:
        (call,) = _apply_calls(rt, run_id)
        directory = call_directory(rt, run_id)
        try:
            last = client.last_message(call["session_id"], directory=directory)
        except OpenCodeError as exc:
            if exc.status != 404:
                raise
            continue
        if last is not None and last.info.get("error") is None:
            ran_to_end.append(run_id)
    assert ran_to_end == [], (
        f"cancelled run(s) {ran_to_end} (of {sorted(runs)}) had their blocking prompt run to"
        " its end: the echo listed only the first run by id on every pass"
    )
