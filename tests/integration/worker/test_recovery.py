"""Recovery from Postgres alone: leases, fencing tokens, the reconciler, the DB guards."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import structlog
import structlog.testing
from sqlalchemy import create_engine, make_url, select, text, update
from sqlalchemy.exc import DBAPIError

from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime
from services.worker.steps.base import StepAbandoned, StepOutcome, load_context, run_step
from services.worker.steps.compile import compile_step
from shared.clock import FixedClock
from shared.db.engine import unit_of_work
from shared.db.models import Artifact, Run, StepRun
from shared.db.schema_version import EXPECTED_HEAD, SchemaMismatch, assert_schema_current
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepLease
from shared.service.processes import register_process
from shared.service.runs import cancel_run
from shared.service.steps import StepSuperseded, record_outcome
from shared.version import app_version
from tests.conftest import scratch_database_url
from tests.integration.worker.conftest import RuntimeFactory, new_run, uow, wait_lease_lapsed

pytestmark = pytest.mark.integration


def _queued_steps(rt: Runtime) -> list[str]:
    raw = redis.Redis.from_url(rt.settings.redis_url).lrange("kodo", 0, -1)
    return [json.loads(m)["headers"]["task"] for m in raw]


def test_a_second_delivery_is_turned_away_while_the_first_holds_a_live_lease(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    holder = load_context(rt, run_id, StepId.COMPILE)
    assert holder is not None
    assert load_context(rt, run_id, StepId.COMPILE) is None
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"


def test_a_late_worker_is_fenced_off_and_cannot_overwrite_its_successor(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2)
    run_id = new_run(rt, repo)
    presumed_dead = load_context(rt, run_id, StepId.COMPILE)
    assert presumed_dead is not None
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"

    def stale_body(_: object) -> StepOutcome:
        return StepOutcome.failed("a stale worker's verdict", {})

    # The dead worker wakes up and tries to record a failure with its old fence.
    with pytest.raises(StepSuperseded), unit_of_work(rt.sessions) as s:
        record_outcome(s, presumed_dead.lease, stale_body(None), rt.clock.now())
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.status == "waiting_input"


def test_an_outcome_whose_run_moved_meanwhile_is_not_recorded_on_the_step_either(
    rt: Runtime, repo: Path
) -> None:
    """The step's record, its artifacts and the run's move are one statement: a run
    cancelled while its step ran refuses the move, and the step's record and artifacts
    go back with it."""
    run_id = new_run(rt, repo)
    ctx = load_context(rt, run_id, StepId.COMPILE)
    assert ctx is not None
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    _refused_as_superseded(rt, ctx.lease)
    with rt.sessions() as s:
        step = s.scalars(
            select(StepRun).where(StepRun.run_id == run_id, StepRun.step_id == "CompileST")
        ).one()
        assert (step.status, step.error, step.finished_at) == ("running", None, None)
        kept = s.scalars(select(Artifact.name).where(Artifact.run_id == run_id)).all()
        assert kept == [], "the refused failure's diagnostic.json went back with it"
    assert _status_and_error(rt, run_id) == ("cancelled", None)


def _refused_as_superseded(rt: Runtime, lease: StepLease) -> None:
    """A failure recorded with ``lease`` is refused (StepSuperseded, rolled back)."""
    with pytest.raises(StepSuperseded), unit_of_work(rt.sessions) as s:
        record_outcome(s, lease, StepOutcome.failed("too late", {}), rt.clock.now())


def _status_and_error(rt: Runtime, run_id: str) -> tuple[str, str | None]:
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run.status, run.error


def test_a_run_whose_dispatch_was_lost_is_redispatched_by_the_reconciler(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(clock=clock, redispatch_after_s=30)
    run_id = new_run(rt, repo)  # compiling, but no message was ever sent
    assert reconcile(rt) == []
    clock.advance(31)
    redone = reconcile(rt)
    assert [(r.run_id, r.step, r.reason) for r in redone] == [
        (run_id, StepId.COMPILE, "never entered")
    ]
    assert _queued_steps(rt) == ["kodo.CompileST"]
    clock.advance(31)
    assert reconcile(rt) == [], "while its message waits in the queue, no copy is added"
    redis.Redis.from_url(rt.settings.redis_url).delete("kodo")  # Redis loses it
    assert len(reconcile(rt)) == 1, "a lost re-dispatch is sent again"


def test_a_long_backlog_is_not_flooded_but_never_waits_forever(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(clock=clock, redispatch_after_s=30)
    run_id = new_run(rt, repo)
    redis.Redis.from_url(rt.settings.redis_url).rpush("kodo", b"someone else's message")
    clock.advance(31)
    assert reconcile(rt) == [], "a backlog: the step may just be waiting its turn"
    clock.advance(30 * 10)
    assert [r.run_id for r in reconcile(rt)] == [run_id], "the hard cap still recovers it"


def test_a_step_whose_worker_died_is_handed_to_the_next_delivery(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2, redispatch_after_s=5)
    run_id = new_run(rt, repo)
    assert load_context(rt, run_id, StepId.COMPILE) is not None  # entered, then SIGKILLed
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    redone = reconcile(rt)
    assert len(redone) == 1
    assert redone[0].reason.startswith("lease of ")
    assert reconcile(rt) == [], "the hand-over is reserved until the next delivery"
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    with rt.sessions() as s:
        row = s.execute(
            text("SELECT fence, deliveries FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).one()
    assert (row.fence, row.deliveries) == (2, 2)


def test_a_cancelled_run_stops_its_step_before_the_next_provider_call(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    ctx = load_context(rt, run_id, StepId.COMPILE)
    assert ctx is not None
    with unit_of_work(rt.sessions) as s:
        s.execute(update(Run).where(Run.id == run_id).values(status="cancelled"))
    with pytest.raises(StepAbandoned, match="cancelled"):
        ctx.keep_lease()


def test_a_fenced_off_delivery_cannot_hold_the_lease_its_successor_holds(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2)
    run_id = new_run(rt, repo)
    first = load_context(rt, run_id, StepId.COMPILE)
    assert first is not None
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    second = load_context(rt, run_id, StepId.COMPILE)
    assert second is not None
    with pytest.raises(StepAbandoned, match="newer delivery"):
        first.keep_lease()
    # nor move the run with its outcome, though the run is still at the step's status:
    # the run's move stands only with the step's record
    _refused_as_superseded(rt, first.lease)
    assert _status_and_error(rt, run_id) == ("compiling", None)
    second.keep_lease()  # the successor's own fence holds


def test_a_body_running_longer_than_its_lease_keeps_it_renewed(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """The renewer beats every lease_s / 3: another delivery is turned away throughout."""
    rt = make_rt(step_lease_s=0.3)
    run_id = new_run(rt, repo)
    turned_away: list[bool] = []

    def long_body(_: object) -> StepOutcome:
        for _ in range(10):  # a second of work, three leases long
            turned_away.append(load_context(rt, run_id, StepId.COMPILE) is None)
            time.sleep(0.1)
        return StepOutcome.failed("the body's own verdict", {})

    assert run_step(rt, StepId.COMPILE, run_id, long_body) == "failed"
    assert turned_away == [True] * 10


def test_the_database_refuses_an_applied_patch_without_an_approval(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    forged = StepRun(
        run_id=run_id, step_id="ApplyPatchST", status="succeeded", started_at=rt.clock.now()
    )
    with rt.sessions() as s:
        s.add(forged)
        with pytest.raises(DBAPIError, match="without an approval"):
            s.flush()


def test_the_database_refuses_a_running_apply_moved_to_succeeded_without_an_approval(
    rt: Runtime, repo: Path
) -> None:
    """The gate fires on the status change too (its trigger's WHEN names the one move it
    judges: ApplyPatchST to ``succeeded``); other steps' moves pass untouched."""
    run_id = new_run(rt, repo)
    with rt.sessions() as s, s.begin():
        s.add(
            StepRun(
                run_id=run_id, step_id="ApplyPatchST", status="running", started_at=rt.clock.now()
            )
        )
        s.add(
            StepRun(run_id=run_id, step_id="CompileST", status="running", started_at=rt.clock.now())
        )
    with rt.sessions() as s, s.begin():
        s.execute(
            update(StepRun)
            .where(StepRun.run_id == run_id, StepRun.step_id == "CompileST")
            .values(status="succeeded")
        )
    with rt.sessions() as s, pytest.raises(DBAPIError, match="without an approval"):
        s.execute(
            update(StepRun)
            .where(StepRun.run_id == run_id, StepRun.step_id == "ApplyPatchST")
            .values(status="succeeded")
        )


def test_a_process_refuses_a_database_of_another_migration_head(database_url: str) -> None:
    engine = create_engine(database_url)
    assert assert_schema_current(engine) == EXPECTED_HEAD
    assert register_process(engine, "cli") == EXPECTED_HEAD
    scratch = make_url(scratch_database_url(database_url, "unmigrated"))
    admin = create_engine(scratch.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{scratch.database}"'))
    empty = create_engine(scratch)
    try:
        with pytest.raises(SchemaMismatch, match=f"needs {EXPECTED_HEAD}"):
            register_process(empty, "worker")
    finally:
        empty.dispose()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        admin.dispose()


def test_the_expected_head_is_the_migrations_head() -> None:
    from alembic.script import ScriptDirectory

    from tests.conftest import ROOT

    assert ScriptDirectory(str(ROOT / "migrations")).get_current_head() == EXPECTED_HEAD


def test_a_run_picked_up_by_another_version_is_logged_and_visible_in_sql(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    with unit_of_work(rt.sessions) as s:
        s.execute(update(Run).where(Run.id == run_id).values(app_version="0.0.1-old"))
    with structlog.testing.capture_logs() as logs:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    mismatches = [e for e in logs if e["event"] == "step.version_mismatch"]
    assert mismatches[0]["run_version"] == "0.0.1-old"
    with rt.sessions() as s:
        row = s.execute(
            text(
                "SELECT r.app_version AS run_version, s.app_version AS step_version"
                " FROM app.runs r JOIN app.step_runs s ON s.run_id = r.id WHERE r.id = :r"
            ),
            {"r": run_id},
        ).one()
    assert row.run_version == "0.0.1-old"
    assert row.step_version == app_version()
