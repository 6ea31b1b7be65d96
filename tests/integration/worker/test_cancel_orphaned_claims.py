"""A cancelled run's call left ``claimed`` by a claimant that died, on real Postgres and
oc-compat.

A claimant records its call ``sent`` when it parks, after ``prompt_async``; a cancel
aborts the session of a ``claimed`` call but leaves its record to the claimant. One
killed between the prompt and the park leaves the call ``claimed`` with its session
made and its prompt at the daemon: the reconciler's sweep takes it once the step's
lease lapses (a live claimant keeps renewing it), aborts it and records it as it does
a sent call, settling its reservation. A claimant that was only stalled past its lease
and sends its prompt after that finds its run cancelled when it parks, and aborts its
own session: no abort of the run lists a call recorded already (with sessions kept;
otherwise the session is deleted once recorded, and the late prompt runs nothing).

The dead claimant's state is made from a real parked call: the call set back to
``claimed``, the step's row to a lease held by a worker that stopped renewing it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls, abort_late_prompt, abort_missed_calls
from services.worker.runtime import Runtime
from services.worker.steps.base import _park, run_step
from services.worker.steps.compile import compile_step
from shared.db.repos.ledger import LedgerRepo
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepLease
from shared.opencode.calls import CallPending
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, new_run, only_call, uow
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

HELD = "Add multiply to calc.py [oc:slow=60000]"


def _claimed_by_a_worker_that_stopped(
    rt: Runtime, repo: Path, lease_left_s: float, *, cancelled: bool = True
) -> str:
    """A run whose CompileST call is at the daemon, still ``claimed``, its step's lease
    held by a worker that will not park (``lease_left_s`` of it left: < 0 lapsed); the
    run cancelled unless ``cancelled`` is False."""
    run_id = new_run(rt, repo, HELD)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt) as work:
        work.session.execute(
            text("UPDATE app.opencode_calls SET status = 'claimed' WHERE run_id = :r"),
            {"r": run_id},
        )
        work.session.execute(
            text(
                "UPDATE app.step_runs SET lease_owner = 'worker-1@host', parked_on = NULL,"
                " lease_expires_at = statement_timestamp() + make_interval(secs => :s)"
                " WHERE run_id = :r"
            ),
            {"r": run_id, "s": lease_left_s},
        )
        if cancelled:
            cancel_run(work, run_id, now=rt.clock.now())
    return run_id


def _busy(oc_url: str, call: dict[str, object]) -> bool:
    """Whether the call's session has a turn running at oc-compat."""
    status = httpx.get(f"{oc_url}/session/status", params={"directory": call["directory"]})
    return str(call["session_id"]) in status.json()


def test_the_sweep_aborts_and_records_a_claim_whose_claimant_is_gone(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=-1)
    before = only_call(rt, run_id)
    assert _busy(oc_url, before), "the dead claimant's prompt is running at the daemon"

    assert abort_missed_calls(rt) == [run_id], "the sweep finds the orphaned claim"
    call = only_call(rt, run_id)
    assert (call["status"], call["error_name"]) == ("aborted", "RunCancelled")
    assert not _busy(oc_url, call), "its turn was aborted"
    assert isinstance(call["usage"], dict), "totals read after the abort"
    reserved = call["reserved_tokens"]
    assert isinstance(reserved, int)
    assert reserved > 0
    assert call["spent_tokens"] == max(call["usage"]["total_tokens"], reserved)
    assert call["run_reserved"] == 0, "the run's reservation is settled"
    assert abort_missed_calls(rt) == [], "nothing of the run is left to sweep"


def test_a_claim_whose_claimant_still_renews_its_lease_is_aborted_but_left_to_it(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """The sweep aborts a live claimant's session each pass (a blocking prompt sent
    after the cancel's abort is cut), and leaves the call's record to its claimant."""
    rt = make_rt(oc_async=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=600)

    assert abort_missed_calls(rt) == [run_id], "the sweep aborts its session too"
    assert only_call(rt, run_id)["status"] == "claimed", "a live claimant records its own"
    session_id = only_call(rt, run_id)["session_id"]
    assert abort_inflight_calls(rt, run_id) == [session_id], "the cancel's abort reaches it"
    call = only_call(rt, run_id)
    assert call["status"] == "claimed", "and leaves its record to the claimant"
    assert not _busy(oc_url, call)


def test_a_running_runs_lapsed_claim_is_not_the_sweeps(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """Only a cancelled run's: a running run's next delivery collects its claim."""
    rt = make_rt(oc_async=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=-1, cancelled=False)
    assert abort_missed_calls(rt) == []
    assert abort_inflight_calls(rt, run_id) == [], "the run is not cancelled"
    call = only_call(rt, run_id)
    assert call["status"] == "claimed"
    assert _busy(oc_url, call)


def _late_prompt(oc_url: str, call: dict[str, object]) -> httpx.Response:
    """The stalled claimant's prompt, reaching the daemon only now."""
    return httpx.post(
        f"{oc_url}/session/{call['session_id']}/prompt_async",
        params={"directory": call["directory"]},
        json={"agent": "plan", "parts": [{"type": "text", "text": HELD}]},
    )


def _late_park(rt: Runtime, run_id: str, call: dict[str, object]) -> str:
    """The stalled claimant's park, with the fence it entered the step with."""
    with rt.sessions() as s:
        fence = s.execute(
            text("SELECT fence FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    lease = StepLease(run_id, StepId.COMPILE, fence, rt.settings.step_lease_s)
    pending = CallPending(
        str(call["op_key"]), str(call["session_id"]), 60, woken=False, unrecorded=True
    )
    return _park(rt, lease, pending)


def test_a_stalled_claimants_late_prompt_finds_its_session_deleted(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """Recorded with its totals, the aborted call's session is deleted (OC_KEEP_SESSIONS
    off, the default): a prompt sent after that runs nothing."""
    rt = make_rt(oc_async=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=-1)
    assert abort_missed_calls(rt) == [run_id]
    call = only_call(rt, run_id)
    assert call["status"] == "aborted"
    assert _late_prompt(oc_url, call).status_code == 404
    assert not _busy(oc_url, call)


def test_a_stalled_claimant_that_sends_after_the_sweep_aborts_its_own_session(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """With sessions kept, the late prompt starts a turn no abort of the run lists (its
    call is recorded): the claimant's park finds the run cancelled and aborts it."""
    rt = make_rt(oc_async=True, oc_keep_sessions=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=-1)
    assert abort_missed_calls(rt) == [run_id]
    call = only_call(rt, run_id)
    assert call["status"] == "aborted"

    assert _late_prompt(oc_url, call).status_code == 204
    assert _busy(oc_url, call)
    assert abort_inflight_calls(rt, run_id) == [], "the run's abort no longer lists it"
    assert _busy(oc_url, call)

    assert _late_park(rt, run_id, call) == "cancelled"
    wait_until(lambda: not _busy(oc_url, call), 5, "the late turn to be aborted")
    assert only_call(rt, run_id)["status"] == "aborted", "its record stands"


def test_a_stalled_claimant_aborts_its_prompt_while_the_sweep_still_holds_the_call(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """The sweep took the call (``sent``) and its abort found the session idle; the late
    prompt then started a turn, and the sweep's record will end the call: the run's
    abort, coming after, would list nothing. The park aborts the turn itself."""
    rt = make_rt(oc_async=True)
    run_id = _claimed_by_a_worker_that_stopped(rt, repo, lease_left_s=-1)
    with uow(rt) as work:
        assert LedgerRepo(work.session).take_orphaned_claims(run_id) == 1
    call = only_call(rt, run_id)
    assert call["status"] == "sent"
    assert _busy(oc_url, call), "the late prompt's turn"

    assert _late_park(rt, run_id, call) == "cancelled"
    wait_until(lambda: not _busy(oc_url, call), 5, "the late turn to be aborted")


def test_a_fenced_off_claimant_aborts_a_prompt_whose_call_someone_else_ended(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """A running run: a newer delivery took the step and declared the stalled
    claimant's call unknown; nobody will collect the prompt that lands after."""
    rt = make_rt(oc_async=True)
    run_id = new_run(rt, repo, HELD)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    call = only_call(rt, run_id)
    with uow(rt) as work:
        work.session.execute(
            text(
                "UPDATE app.opencode_calls SET status = 'unknown', error_name = 'OutcomeUnknown',"
                " finished_at = now() WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        fence = work.session.execute(
            text("SELECT fence FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        work.session.execute(
            text("UPDATE app.step_runs SET fence = fence + 1 WHERE run_id = :r"), {"r": run_id}
        )
    lease = StepLease(run_id, StepId.COMPILE, fence, rt.settings.step_lease_s)
    pending = CallPending(
        str(call["op_key"]), str(call["session_id"]), 60, woken=False, unrecorded=True
    )

    assert _park(rt, lease, pending) == "superseded"
    wait_until(lambda: not _busy(oc_url, call), 5, "the uncollectable turn to be aborted")


def test_a_fenced_off_claimants_open_call_is_left_to_the_newer_delivery(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = new_run(rt, repo, HELD)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    call = only_call(rt, run_id)
    assert abort_late_prompt(rt, str(call["op_key"]), run_cancelled=False) is False
    assert _busy(oc_url, call), "the newer delivery collects its answer"
