"""Specs: the statement that reads a delivery's run takes the step's lease with it.

``entered_snapshot`` is one statement: the run as the step sees it and, if the run is
at the step's status, the step's lease, taken one way of two (a parked step with a
live hold resumed, any other entered). Each spec sets the step's row as a delivery
could find it and asks what the statement took and wrote, on real Postgres; one races
deliveries for one step from threads. A provider call's claim holds the lease in its
own statement the same way: refused, leaving no row, for a run that moved or a
delivery fenced off.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.worker.runtime import Runtime
from shared.db import direct
from shared.db.repos.snapshots import RunSnapshot, entered_snapshot
from shared.db.repos.steps import PARKED, RECONCILER, Entered
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import StructuredCall
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import new_run, uow

COMPILE = StepId.COMPILE


def _take(rt: Runtime, run_id: str, owner: str) -> tuple[RunSnapshot, Entered | None] | None:
    """What a delivery of ``owner`` reads and takes, its statement run alone (as
    ``load_context`` runs it)."""
    with direct.alone(rt.engine) as s:
        return entered_snapshot(
            s, run_id, COMPILE, owner=owner, lease_s=60, app_version="t", task_id=f"task-{owner}"
        )


def _lease(rt: Runtime, run_id: str, owner: str) -> Entered | None:
    found = _take(rt, run_id, owner)
    assert found is not None
    return found[1]


def _row(rt: Runtime, run_id: str) -> dict[str, Any] | None:
    with rt.sessions() as s:
        found = s.execute(
            text(
                "SELECT s.fence, s.deliveries, s.lease_owner, s.parked_on, s.task_id,"
                " s.lease_expires_at > statement_timestamp() AS live, r.retry_count"
                " FROM app.runs r LEFT JOIN app.step_runs s"
                " ON s.run_id = r.id AND s.step_id = 'CompileST' WHERE r.id = :r"
            ),
            {"r": run_id},
        ).one()
        return None if found.fence is None else dict(found._mapping)


def _set(rt: Runtime, run_id: str, assignments: str) -> None:
    """Leave the step's row as a delivery could find it (``assignments``: this module's
    own constants, never input)."""
    update = f"UPDATE app.step_runs SET {assignments}"  # noqa: S608 - the spec's constants
    with rt.sessions.begin() as s:
        s.execute(text(update + " WHERE run_id = :r AND step_id = 'CompileST'"), {"r": run_id})


PARK_LIVE = (
    f"parked_on = 'op-1', lease_owner = '{PARKED}', lease_expires_at = now() + interval '60 s'"
)
PARK_LAPSED = (
    f"parked_on = 'op-1', lease_owner = '{PARKED}', lease_expires_at = now() - interval '1 s'"
)


@pytest.fixture
def run_id(rt: Runtime, repo: Path) -> str:
    return new_run(rt, repo)


def test_a_first_delivery_inserts_the_step_with_the_first_fence(rt: Runtime, run_id: str) -> None:
    found = _take(rt, run_id, "a")
    assert found is not None
    snapshot, entered = found
    assert (snapshot.run_id, snapshot.status, snapshot.round) == (
        run_id,
        "compiling",
        1,
    )
    assert entered is not None
    assert (entered.fence, entered.deliveries) == (1, 1)
    row = _row(rt, run_id)
    assert row is not None
    assert (row["fence"], row["deliveries"], row["lease_owner"], row["task_id"]) == (
        1,
        1,
        "a",
        "task-a",
    )
    assert row["live"]
    assert row["retry_count"] == 0


def test_an_unknown_run_reads_nothing_and_takes_nothing(rt: Runtime) -> None:
    assert _take(rt, str(uuid.uuid4()), "a") is None


def test_a_delivery_of_a_run_that_moved_on_takes_nothing_and_writes_nothing(
    rt: Runtime, run_id: str
) -> None:
    with uow(rt) as work:
        cancel_run(work, run_id, now=datetime.now().astimezone())
    found = _take(rt, run_id, "a")
    assert found is not None
    snapshot, entered = found
    assert snapshot.status == "cancelled"
    assert entered is None
    assert _row(rt, run_id) is None, "no step row was inserted"


@pytest.mark.parametrize("found", [PARK_LIVE, PARK_LAPSED], ids=["parked", "past-its-hold"])
def test_a_parked_step_of_a_run_that_moved_on_is_neither_resumed_nor_entered(
    rt: Runtime, run_id: str, found: str
) -> None:
    assert _lease(rt, run_id, "a") is not None
    _set(rt, run_id, found)
    with uow(rt) as work:
        cancel_run(work, run_id, now=datetime.now().astimezone())
    before = _row(rt, run_id)
    assert _lease(rt, run_id, "b") is None
    assert _row(rt, run_id) == before


def test_a_live_lease_is_not_taken_and_nothing_is_counted(rt: Runtime, run_id: str) -> None:
    assert _lease(rt, run_id, "a") is not None
    assert _lease(rt, run_id, "b") is None
    row = _row(rt, run_id)
    assert row is not None
    assert (row["fence"], row["deliveries"], row["lease_owner"], row["retry_count"]) == (
        1,
        1,
        "a",
        0,
    )


@pytest.mark.parametrize(
    "left",
    ["lease_expires_at = now() - interval '1 s'", f"lease_owner = '{RECONCILER}'", PARK_LAPSED],
    ids=["lapsed", "left-by-the-reconciler", "parked-past-its-hold"],
)
def test_a_lapsed_lease_or_one_the_reconciler_left_is_taken_as_a_redelivery(
    rt: Runtime, run_id: str, left: str
) -> None:
    assert _lease(rt, run_id, "a") is not None
    _set(rt, run_id, left)
    entered = _lease(rt, run_id, "b")
    assert entered is not None
    assert (entered.fence, entered.deliveries) == (2, 2)
    row = _row(rt, run_id)
    assert row is not None
    assert (row["lease_owner"], row["task_id"], row["retry_count"]) == ("b", "task-b", 1)
    assert row["parked_on"] is None


def test_a_step_parked_with_a_live_hold_is_resumed_not_redelivered(
    rt: Runtime, run_id: str
) -> None:
    assert _lease(rt, run_id, "a") is not None
    _set(rt, run_id, PARK_LIVE + ", parked_work_ms = 7")
    found = _take(rt, run_id, "b")
    assert found is not None
    _, entered = found
    assert entered is not None
    assert (entered.fence, entered.deliveries, entered.parked_work_ms) == (2, 1, 7)
    row = _row(rt, run_id)
    assert row is not None
    assert (row["parked_on"], row["lease_owner"], row["retry_count"]) == (None, "b", 0)


@pytest.mark.parametrize(
    "found",
    [None, PARK_LIVE, PARK_LAPSED, "lease_expires_at = now() - interval '1 s'"],
    ids=["no-row", "parked", "parked-past-its-hold", "lapsed"],
)
def test_deliveries_racing_for_one_step_take_it_once(
    rt: Runtime, repo: Path, found: str | None
) -> None:
    """Four deliveries at once, ten times over: one lease each time, the others turned
    away without an error (the statement never writes one row twice)."""
    for _ in range(10):
        run_id = new_run(rt, repo)
        if found is not None:
            assert _lease(rt, run_id, "first") is not None
            _set(rt, run_id, found)
        before = _row(rt, run_id)
        taken, errors = _race(rt, run_id, 4)
        assert errors == []
        won = [e for e in taken if e is not None]
        assert len(taken) == 4
        assert len(won) == 1
        fence = 1 if before is None else before["fence"] + 1
        assert won[0].fence == fence
        row = _row(rt, run_id)
        assert row is not None
        assert row["fence"] == fence
        assert row["parked_on"] is None


def _race(rt: Runtime, run_id: str, n: int) -> tuple[list[Entered | None], list[BaseException]]:
    """``n`` deliveries of ``run_id``'s step released at once: what each took, and any
    error one raised."""
    start = threading.Barrier(n)
    taken: list[Entered | None] = []
    errors: list[BaseException] = []

    def deliver(owner: str) -> None:
        start.wait()
        try:
            taken.append(_lease(rt, run_id, owner))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(f"w{i}",)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return taken, errors


# -- a provider call's claim holds the lease in its own statement ----------------------


def _claim(rt: Runtime, run_id: str, lease: StepLease) -> bool:
    call = StructuredCall(run_id, "CompileST", 1, "plan", "p", {"type": "object"}, "/w")
    return PostgresCallLedger(rt.sessions).claim(call, {"directory": "/w"}, lease=lease)


def _claims(rt: Runtime, run_id: str) -> int:
    with rt.sessions() as s:
        found = s.execute(
            text("SELECT count(*) FROM app.opencode_calls WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        return int(found)


def _delivered(rt: Runtime, run_id: str, owner: str) -> StepLease:
    entered = _lease(rt, run_id, owner)
    assert entered is not None
    return StepLease(run_id, COMPILE, entered.fence, 60)


def test_a_claim_under_its_live_lease_wins_and_renews_the_lease(rt: Runtime, run_id: str) -> None:
    lease = _delivered(rt, run_id, "a")
    _set(rt, run_id, "lease_expires_at = now() + interval '2 s'")
    assert _claim(rt, run_id, lease)
    assert _claims(rt, run_id) == 1
    with rt.sessions() as s:
        left = s.execute(
            text(
                "SELECT extract(epoch FROM lease_expires_at - now()) FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert float(left) > 30, "renewed for the lease's 60 s by the claim's statement"


def _expiry(rt: Runtime, run_id: str) -> Any:
    with rt.sessions() as s:
        return s.execute(
            text(
                "SELECT lease_expires_at FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        ).scalar_one()


def test_a_claim_of_a_cancelled_run_is_refused_and_leaves_no_row(rt: Runtime, run_id: str) -> None:
    """Run alone (no transaction rolls anything back): the refused claim wrote nothing,
    not even its lease's renewal."""
    lease = _delivered(rt, run_id, "a")
    with uow(rt) as work:
        cancel_run(work, run_id, now=datetime.now().astimezone())
    before = _expiry(rt, run_id)
    with pytest.raises(StepAbandoned, match="run is cancelled"):
        _claim(rt, run_id, lease)
    assert _claims(rt, run_id) == 0
    assert _expiry(rt, run_id) == before


def test_a_cancel_committed_while_the_claim_waits_for_the_run_is_seen_and_nothing_is_claimed(
    rt: Runtime, run_id: str
) -> None:
    """The race the run's row lock decides: the claim's snapshot still shows the run at
    the step's status, but a cancel holds the run's row; the claim reads the run as the
    cancel left it once it commits, and refuses."""
    lease = _delivered(rt, run_id, "a")
    outcome: list[BaseException | bool] = []

    def claim() -> None:
        try:
            outcome.append(_claim(rt, run_id, lease))
        except BaseException as exc:  # recorded for the assertions below
            outcome.append(exc)

    claimer = threading.Thread(target=claim)
    with uow(rt) as work:
        cancel_run(work, run_id, now=datetime.now().astimezone())
        work.session.flush()
        claimer.start()
        claimer.join(0.5)
        assert claimer.is_alive(), "the claim waits for the cancel's lock on the run"
    claimer.join(10)
    [refused] = outcome
    assert isinstance(refused, StepAbandoned), refused
    assert "run is cancelled" in str(refused)
    assert _claims(rt, run_id) == 0


def test_a_claim_of_a_fenced_off_delivery_is_refused_and_leaves_no_row(
    rt: Runtime, run_id: str
) -> None:
    stale = _delivered(rt, run_id, "a")
    _set(rt, run_id, "lease_expires_at = now() - interval '1 s'")
    successor = _delivered(rt, run_id, "b")
    with pytest.raises(StepAbandoned, match="newer delivery"):
        _claim(rt, run_id, stale)
    assert _claims(rt, run_id) == 0
    assert _claim(rt, run_id, successor), "the successor's own claim wins"
