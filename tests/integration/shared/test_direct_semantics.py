"""shared.db.direct against Session/Connection.execute, angle by angle (a red-team pass).

Each test runs the same case through SQLAlchemy and through direct.execute and holds
them to the same outcome; where direct deliberately differs (it refuses what
SQLAlchemy would have run differently), the test says so and asserts the refusal.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, create_engine, event, exc, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bench import sqlcount
from shared.db import direct
from shared.db.models import Run, StepRun, table_of
from shared.db.repos import runs, snapshots, steps
from tests import factories

_RUNS = table_of(Run)
_STEPS = table_of(StepRun)
_STATUS = runs._STATUS_OF
# A bind name SQLAlchemy must escape for the driver ("." is not allowed in %(name)s).
_STATUS_DOTTED = select(_RUNS.c.status).where(_RUNS.c.id == bindparam("run.id"))
_NO_RETURNING = update(_RUNS).where(_RUNS.c.id == bindparam("w_id")).values(error=bindparam("e"))

Runner = Callable[[Session, Any, dict[str, Any]], Any]
SA: Runner = lambda s, stmt, p: s.execute(stmt, p)  # noqa: E731
FAST: Runner = lambda s, stmt, p: direct.execute(s, stmt, p)  # noqa: E731
BOTH = pytest.mark.parametrize("run_it", [SA, FAST], ids=["sqlalchemy", "direct"])


def _lease(run_id: str) -> dict[str, Any]:
    return {
        "w_run_id": run_id,
        "w_step_id": "CompileST",
        "w_fence": 1,
        "lease": timedelta(seconds=30),
    }


def _running(run: Run, step_id: str) -> StepRun:
    return StepRun(
        run_id=run.id, step_id=step_id, status="running", fence=1, started_at=datetime.now(UTC)
    )


def _running_step(db: Session) -> Run:
    run: Run = factories.RunFactory()
    db.add(_running(run, "CompileST"))
    db.flush()
    return run


@pytest.fixture
def committed(sessions: sessionmaker[Session]) -> Iterator[Run]:
    with sessions() as s:
        factories.bind(s)
        run = _running_step(s)
        s.commit()
        yield run


def _status(sessions: sessionmaker[Session], run_id: str) -> str:
    with sessions() as s:
        return str(
            s.execute(
                text("SELECT status FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        )


# --- parameters -------------------------------------------------------------------


def test_a_bind_name_sqlalchemy_must_escape_is_refused_not_sent_as_null(db: Session) -> None:
    """'run.id' is sent as %(run_id)s: the caller's value would miss it (NULL)."""
    run = factories.RunFactory()
    db.flush()
    assert db.execute(_STATUS_DOTTED, {"run.id": run.id}).scalar_one() == run.status
    with pytest.raises(TypeError, match="escaped"):
        direct.execute(db, _STATUS_DOTTED, {"run.id": run.id})


def test_an_extra_key_named_like_a_column_is_refused(
    sessions: sessionmaker[Session], committed: Run
) -> None:
    """SQLAlchemy compiles such a key into a SET clause (the step's status changes);
    direct refuses any key its statement does not bind, and changes nothing."""
    with sessions() as s:
        SA(s, steps._RENEW, {**_lease(committed.id), "status": "failed"})
        s.rollback()
        with pytest.raises(exc.StatementError, match="status"):
            FAST(s, steps._RENEW, {**_lease(committed.id), "status": "failed"})
        s.rollback()
    assert _status(sessions, committed.id) == "running"


@BOTH
def test_a_compiled_default_name_given_by_the_caller_overrides_the_literal(
    db: Session, run_it: Runner
) -> None:
    """``status_1`` (the literal 'running' of _ours()) is overridable both ways: parity."""
    run = _running_step(db)
    params = {**_lease(run.id), "status_1": "succeeded"}
    assert run_it(db, steps._RENEW, params).scalar_one_or_none() is None


def test_a_missing_parameter_raises_sqlalchemys_statement_error(db: Session) -> None:
    with pytest.raises(exc.StatementError):
        db.execute(_STATUS, {})
    with pytest.raises(exc.StatementError):
        direct.execute(db, _STATUS, {})


def test_a_bind_processor_error_is_wrapped(db: Session) -> None:
    from shared.db.repos import ledger

    params = {
        "op_key": "k",
        "run_id": "r",
        "step_id": "CompileST",
        "attempt": 1,
        "agent": "a",
        "request": {},
        "call_usd": None,
        "call_tok": None,
        "budgeted": "no",
    }
    with pytest.raises(exc.StatementError):
        db.execute(ledger._CLAIM, params)
    db.rollback()
    with pytest.raises(exc.StatementError):
        direct.execute(db, ledger._CLAIM, params)


# --- results ----------------------------------------------------------------------


def test_reading_rows_of_a_statement_without_returning_is_refused(db: Session) -> None:
    run = factories.RunFactory()
    db.flush()
    with pytest.raises(exc.ResourceClosedError):
        db.execute(_NO_RETURNING, {"w_id": run.id, "e": "x"}).first()
    with pytest.raises(exc.ResourceClosedError):
        direct.execute(db, _NO_RETURNING, {"w_id": run.id, "e": "x"}).first()


def test_rowcount_of_an_update_and_an_insert_on_conflict(db: Session) -> None:
    """The same for an UPDATE; for an INSERT ... ON CONFLICT DO NOTHING direct counts
    what psycopg counts (documented on Rows), where SQLAlchemy says -1."""
    run = _running_step(db)
    seen = {}
    for name, run_it in (("sa", SA), ("direct", FAST)):
        nested = db.begin_nested()
        seen[name] = _rowcounts(db, run, run_it)
        nested.rollback()
    assert seen["sa"] == (1, -1, -1)
    assert seen["direct"] == (1, 1, 0)


def _rowcounts(db: Session, run: Run, run_it: Runner) -> tuple[int, int, int]:
    upd = run_it(db, _NO_RETURNING, {"w_id": run.id, "e": "x"}).rowcount
    art = {
        "run_id": run.id,
        "step_id": "CompileST",
        "kind": "plan_card",
        "name": "p",
        "media_type": "application/json",
        "content": b"{}",
        "size": 2,
        "sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    first = run_it(db, steps._PUT_ARTIFACT, art).rowcount
    return upd, first, run_it(db, steps._PUT_ARTIFACT, art).rowcount


# --- listeners --------------------------------------------------------------------


def test_a_retval_listener_rewrites_the_statement(engine: Engine, db: Session) -> None:
    run = factories.RunFactory()
    db.flush()

    def rewrite(_c: Any, _cur: Any, statement: str, params: Any, *_r: Any) -> Any:
        if statement.startswith("SELECT app.runs.status"):
            statement = statement.replace("app.runs.status", "'rewritten'::varchar", 1)
        return statement, params

    event.listen(engine, "before_cursor_execute", rewrite, retval=True)
    try:
        assert db.execute(_STATUS, {"run_id": run.id}).scalar_one() == "rewritten"
        assert direct.execute(db, _STATUS, {"run_id": run.id}).scalar_one() == "rewritten"
    finally:
        event.remove(engine, "before_cursor_execute", rewrite)


def test_cursor_listeners_get_the_after_event_and_no_context(engine: Engine, db: Session) -> None:
    """Both events fire; direct has no ExecutionContext to hand them (None)."""
    seen: list[str] = []

    def before(_c: Any, _cur: Any, _s: str, _p: Any, context: Any, _m: bool) -> None:
        seen.append(f"before:{type(getattr(context, 'compiled', None)).__name__}")

    def after(*_a: Any) -> None:
        seen.append("after")

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        db.execute(_STATUS, {"run_id": "none"})
        sa_seen, seen[:] = list(seen), []
        direct.execute(db, _STATUS, {"run_id": "none"})
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert sa_seen == ["before:PGCompiler_psycopg", "after"]
    assert seen == ["before:NoneType", "after"]


def test_the_benchs_class_level_counter_counts_a_direct_statement(db: Session) -> None:
    event.listen(Engine, "before_cursor_execute", sqlcount._on_statement)
    try:
        before = sqlcount.snapshot()
        direct.execute(db, _STATUS, {"run_id": "none"})
        db.execute(_STATUS, {"run_id": "none"})
        after = sqlcount.snapshot()
    finally:
        event.remove(Engine, "before_cursor_execute", sqlcount._on_statement)
    assert after.get("statements", 0) - before.get("statements", 0) == 2
    label = "stmt:SELECT app.runs"
    assert after.get(label, 0) - before.get(label, 0) == 2


# --- transactions -----------------------------------------------------------------


@BOTH
def test_a_failed_statement_in_a_savepoint_rolls_back_to_it(db: Session, run_it: Runner) -> None:
    run = _running_step(db)
    add = {
        "w_run_id": run.id,
        "w_step_id": "NoSuchST",
        "w_expected": run.status,
        "lease": timedelta(seconds=30),
        "owner": "o",
        "worker_version": "v",
        "task_id": None,
    }
    nested = db.begin_nested()
    with pytest.raises(exc.IntegrityError):  # a step id the check constraint refuses
        run_it(db, snapshots._ENTERING, add)
    nested.rollback()
    assert run_it(db, _STATUS, {"run_id": run.id}).scalar_one() == run.status


@BOTH
def test_no_autoflush_is_respected(db: Session, run_it: Runner) -> None:
    run = factories.RunFactory()
    db.flush()
    db.add(_running(run, "DecideST"))
    read = select(_STEPS.c.id).where(_STEPS.c.run_id == bindparam("r"))
    with db.no_autoflush:
        assert run_it(db, read, {"r": run.id}).all() == []
    assert len(run_it(db, read, {"r": run.id}).all()) == 1


@BOTH
def test_a_lock_timeout_is_an_operational_error_and_the_session_recovers(
    sessions: sessionmaker[Session], committed: Run, run_it: Runner
) -> None:
    with sessions() as holder, sessions() as s:
        holder.execute(
            text("SELECT 1 FROM app.step_runs WHERE run_id = :r FOR UPDATE"), {"r": committed.id}
        )
        s.execute(text("SET LOCAL lock_timeout = '100ms'"))
        with pytest.raises(exc.OperationalError):
            run_it(s, steps._RENEW, _lease(committed.id))
        s.rollback()
        holder.rollback()
        assert run_it(s, steps._RENEW, _lease(committed.id)).scalar_one_or_none() is not None


@BOTH
def test_a_killed_backend_invalidates_the_connection_and_the_pool(
    engine: Engine, sessions: sessionmaker[Session], committed: Run, run_it: Runner
) -> None:
    with sessions() as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            killer.commit()
        before = engine.pool._invalidate_time
        with pytest.raises(exc.OperationalError) as caught:
            run_it(s, steps._RENEW, _lease(committed.id))
        assert caught.value.connection_invalidated
        assert engine.pool._invalidate_time > before
        s.rollback()
        assert run_it(s, steps._RENEW, _lease(committed.id)).scalar_one_or_none() is not None


class _Interrupt(BaseException):
    """Like gevent.Timeout or GreenletExit: not an Exception."""


@BOTH
def test_an_interrupt_mid_statement_invalidates_the_connection(
    sessions: sessionmaker[Session], committed: Run, run_it: Runner
) -> None:
    def interrupt(*_a: Any) -> None:
        raise _Interrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with sessions() as holder, sessions() as s:
            holder.execute(
                text("SELECT 1 FROM app.step_runs WHERE run_id = :r FOR UPDATE"),
                {"r": committed.id},
            )
            conn = s.connection()
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(_Interrupt):
                run_it(s, steps._RENEW, _lease(committed.id))
            holder.rollback()
            invalidated = conn.invalidated
            s.rollback()  # raises "another command is already in progress" if not
            assert invalidated
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_on_an_autocommit_connection_as_connection_execute(engine: Engine, db: Session) -> None:
    """The API's token check: no BEGIN sent, and the Connection's state as execute's."""
    from shared.db.repos import tokens

    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    states = []
    for run_it in (
        lambda c: c.execute(tokens._LIVE_NAME_ROLE, {"digest": "d"}).one_or_none(),
        lambda c: direct.execute(c, tokens._LIVE_NAME_ROLE, {"digest": "d"}).one_or_none(),
    ):
        with auto.connect() as c:
            row = run_it(c)
            states.append(
                (row, c.in_transaction(), c.connection.driver_connection.info.transaction_status)
            )
    assert states[0] == states[1]


# --- the compile cache ------------------------------------------------------------


def test_the_cache_keeps_each_statement_alive_so_an_id_is_never_reused(db: Session) -> None:
    import gc
    import weakref

    stmt = select(_RUNS.c.status).where(_RUNS.c.id == bindparam("x"))
    direct.execute(db, stmt, {"x": "none"})
    ref = weakref.ref(stmt)
    del stmt
    gc.collect()
    assert ref() is not None  # held by direct._cache for the life of the process


def test_concurrent_first_use_from_worker_threads(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        factories.bind(s)
        run = _running_step(s)
        s.commit()
    fresh = [select(_RUNS.c.status).where(_RUNS.c.id == bindparam("run_id")) for _ in range(4)]
    errors: list[BaseException] = []
    results: list[str] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait()
            with sessions() as s:
                for stmt in fresh:
                    results.append(direct.execute(s, stmt, {"run_id": run.id}).scalar_one())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [run.status] * 32


def test_a_second_engines_json_serializer_is_used(
    engine: Engine, database_url: str, db: Session
) -> None:
    stmt = (
        update(_STEPS)
        .where(_STEPS.c.run_id == bindparam("w"))
        .values(output=bindparam("o"))
        .returning(_STEPS.c.output)
    )
    run = _running_step(db)
    direct.execute(db, stmt, {"w": run.id, "o": {"a": 1}})  # compiled for `engine`
    db.rollback()
    other = create_engine(database_url, json_serializer=lambda o: json.dumps({"wrapped": o}))
    try:
        with Session(other) as s:
            factories.bind(s)
            run = _running_step(s)
            sa = s.execute(stmt, {"w": run.id, "o": {"a": 1}}).scalar_one()
            fast = direct.execute(s, stmt, {"w": run.id, "o": {"a": 1}}).scalar_one()
            s.rollback()
    finally:
        factories.bind(db)
        other.dispose()
    assert sa == {"wrapped": {"a": 1}}
    assert fast == sa
