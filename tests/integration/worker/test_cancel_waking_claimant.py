"""A cancelled run's call that the sweep took for an orphan and recorded is never left
to run its turn to the end (red-team helper-102; failed before the sweep aborted such calls again).

The rule (README, services/worker/cancel.py): after a cancel no prompt of the run runs
to its end or edits its worktree; a prompt that leaves after the cancel's abort is cut
by the reconciler's sweep, "each pass ... until the call is recorded".

The hole: ``take_orphaned_claims`` reads "the step's lease lapsed" as "the claimant is
gone". A worker process that is frozen (SIGSTOP, a paused VM or container, swapped
out) between ``mark_started`` (its session recorded, the run still at its status) and
its blocking send stops renewing too, so its lease lapses. The sweep then marks the
call ``sent``, aborts the (idle) session, records it ``aborted`` and settles it (at its
reservation). The process wakes and sends its blocking prompt (OC_ASYNC=0): nothing
checks the row before the send, the sweep never lists the call again (it is no longer
open), and ``abort_late_prompt`` is only called from the asynchronous park. Unless the
sweep's delete of the session went through (OC_KEEP_SESSIONS=1 skips it; a 5xx leaves
it for a later pass), the turn runs to its end at the provider: the build agent edits
the cancelled run's worktree after the cancel and the daemon bills the turn (the
claimant's outcome is refused as CallSuperseded and dropped).

Real Postgres, real oc-compat, in-process steps; the freeze is staged by
tests.integration.worker.freezing (after the claimant's last read of its row: one before
it withholds the prompt, test_cancel_long_freeze.py).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls, abort_missed_calls
from services.worker.forget import forget_sessions
from services.worker.steps.apply_patch import apply_patch_step
from shared.domain.run_machine import StepId
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodeError, OpenCodeServerError
from shared.opencode.turn_inspection import usage_of
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
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SLOW_MS = 5000


@pytest.mark.parametrize("session_left", ["kept_by_OC_KEEP_SESSIONS", "delete_answered_500"])
def test_a_blocking_prompt_sent_after_the_sweep_recorded_its_call_is_cut(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch, session_left: str
) -> None:
    """The claimant's whole process freezes after recording its session and before its
    blocking send; the run is cancelled; the lease lapses; the sweep records the call
    aborted. When the process wakes, its prompt must not run to its end: it is never
    sent, or cut by the next sweep, and the cancelled run's worktree is not edited.
    (With OC_KEEP_SESSIONS=0 and the session's delete confirmed, the prompt meets a 404
    and holds: the delete, made to save the daemon memory, is all that stops it.)"""
    run_id = _approved_run(make_rt, repo, f"Add multiply to calc.py [oc:slow={SLOW_MS}]")
    # oc_async=False (the default here). The sweep deletes a recorded call's session
    # unless OC_KEEP_SESSIONS=1 (an operator's setting for triage, README) or the delete
    # fails (a 5xx, a timeout: the session is kept for forget_sessions' later pass)
    keep = session_left == "kept_by_OC_KEEP_SESSIONS"
    rt = make_rt(oc_timeout_ms=20000, step_lease_s=1, oc_keep_sessions=keep)
    # the freeze comes after the claimant's last read of its row, just before the prompt
    # leaves (a freeze before it withholds the prompt: test_cancel_long_freeze.py)
    freeze = freeze_claimants(rt, monkeypatch, after="the last read of the row")
    if not keep:
        real_delete = OpenCodeClient.delete_session

        def delete_500_while_frozen(
            self: OpenCodeClient, session_id: str, *, directory: str
        ) -> bool:
            if freeze.frozen.is_set():  # the daemon answers deletes 500 for that while
                raise OpenCodeServerError("HTTP 500 UnknownError", status=500)
            return real_delete(self, session_id, directory=directory)

        monkeypatch.setattr(OpenCodeClient, "delete_session", delete_500_while_frozen)

    worker, outcome = step_in_background(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    freeze.wait_reached()
    assert _cancel(rt, run_id) is True
    abort_inflight_calls(rt, run_id)  # the cancel's AbortCalls: the session is idle
    wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
    assert abort_missed_calls(rt) == [run_id]  # the reconciler's pass: taken, aborted
    forget_sessions(rt)  # the rest of that pass
    (swept,) = _apply_calls(rt, run_id)
    assert (swept["status"], swept["settled"]) == ("aborted", True), swept

    freeze.thaw.set()  # the process wakes: its prompt leaves
    title = f"kodo ApplyPatchST {run_id} #1"
    wait_until(lambda: _stats(rt)["by_title"].get(title) == 1, 15, "the prompt to leave")
    # the reconciler keeps passing while the turn would run
    end = time.monotonic() + SLOW_MS / 1000 + 3
    while worker.is_alive() and time.monotonic() < end:
        abort_missed_calls(rt)
        forget_sessions(rt)  # the same pass retries the kept session's delete
        time.sleep(0.5)
    worker.join(30)
    assert not worker.is_alive()

    (call,) = _apply_calls(rt, run_id)
    with rt.sessions() as s, s.begin():  # the 500'd deletes it kept: no later test's rows
        s.execute(
            text("DELETE FROM app.sessions_to_forget WHERE session_id = :s"),
            {"s": call["session_id"]},
        )
    client = rt.daemons.first.client
    directory = call_directory(rt, run_id)
    try:
        last = client.last_message(call["session_id"], directory=directory)
    except OpenCodeError as exc:
        if exc.status != 404:
            raise
        return  # the session was gone before the prompt left: it never ran
    assert last is not None
    billed = usage_of(client.get_session(call["session_id"], directory=directory))
    edited = subprocess.run(
        ["git", "-c", "safe.directory=*", "status", "--porcelain"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert last.info.get("error") is not None, (
        f"the cancelled run's prompt, sent after the sweep recorded its call {call['status']}"
        f" (settled at its reservation, {call['spent_tokens']} tokens), ran to its end at the"
        f" daemon: its turn finished without an abort ({last.info.get('time')}), billed"
        f" {billed['total_tokens']} tokens; the sweep never listed it again; the cancelled"
        f" run's worktree now holds: {edited.strip() or '(nothing)'}; step outcome {outcome}"
    )
