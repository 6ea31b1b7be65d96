"""shared.db.direct: a prebuilt statement sent to psycopg answers as SQLAlchemy would.

Each check runs the same statement both ways on a real database and compares what
came back and what was stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    bindparam,
    event,
    exc,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from shared.db import direct
from shared.db.models import Run, StepRun, table_of
from tests import factories

_STEPS = table_of(StepRun)
_READ = select(_STEPS.c.id, _STEPS.c.status, _STEPS.c.output, _STEPS.c.started_at).where(
    _STEPS.c.run_id == bindparam("run_id")
)
_SET_OUTPUT = (
    update(_STEPS)
    .where(_STEPS.c.run_id == bindparam("w_run_id"), _STEPS.c.status == "running")
    .values(output=bindparam("output"))
    .returning(_STEPS.c.id, _STEPS.c.output)
)
_ADD = insert(_STEPS).values(
    run_id=bindparam("run_id"),
    step_id=bindparam("step_id"),
    status="running",
    fence=1,
    started_at=func.now(),
)


def _running(run: Run, step_id: str) -> StepRun:
    return StepRun(
        run_id=run.id, step_id=step_id, status="running", fence=1, started_at=datetime.now(UTC)
    )


def _step(db: Session, step_id: str = "CompileST") -> Run:
    run: Run = factories.RunFactory()
    db.add(_running(run, step_id))
    db.flush()
    return run


def test_rows_read_directly_equal_the_rows_sqlalchemy_reads(db: Session) -> None:
    run = _step(db)
    core = db.execute(_READ, {"run_id": run.id}).all()
    fast = direct.execute(db, _READ, {"run_id": run.id}).all()
    assert [tuple(r) for r in fast] == [tuple(r) for r in core]
    assert fast[0].status == "running"  # columns read by name, as on a Row


@pytest.mark.parametrize("output", [None, {"a": [1, "x"]}, {"nested": {"k": None}}])
def test_a_jsonb_parameter_is_stored_as_sqlalchemy_stores_it(
    db: Session, output: dict[str, Any] | None
) -> None:
    run = _step(db)
    row = direct.execute(db, _SET_OUTPUT, {"w_run_id": run.id, "output": output}).one()
    stored = db.execute(
        text("SELECT output IS NULL AS is_null, output FROM app.step_runs WHERE id = :i"),
        {"i": row.id},
    ).one()
    assert stored.output == output
    assert row.output == output
    assert stored.is_null is (output is None)  # none_as_null: SQL NULL, never JSON null


def test_pending_orm_objects_are_flushed_before_the_statement(db: Session) -> None:
    run: Run = factories.RunFactory()
    db.add(_running(run, "DecideST"))
    assert [r.status for r in direct.execute(db, _READ, {"run_id": run.id}).all()] == ["running"]


def test_a_missing_parameter_is_refused_not_sent_as_null(db: Session) -> None:
    with pytest.raises(exc.StatementError, match="w_run_id"):
        direct.execute(db, _SET_OUTPUT, {"output": None})


def test_a_constraint_violation_raises_sqlalchemys_integrity_error(db: Session) -> None:
    run = _step(db)
    with pytest.raises(exc.IntegrityError):
        direct.execute(db, _ADD, {"run_id": run.id, "step_id": "CompileST"})


def test_result_shapes_follow_sqlalchemys_rules(db: Session) -> None:
    run = _step(db)
    _step(db, "ApplyPatchST")  # another run: never read
    rows = direct.execute(db, _READ, {"run_id": run.id})
    assert rows.scalar_one() == rows.one()[0] == rows.first()[0]
    assert direct.execute(db, _READ, {"run_id": "none"}).one_or_none() is None
    assert direct.execute(db, _READ, {"run_id": "none"}).scalar() is None
    with pytest.raises(exc.NoResultFound):
        direct.execute(db, _READ, {"run_id": "none"}).one()
    db.add(_running(run, "DecideST"))
    with pytest.raises(exc.MultipleResultsFound):
        direct.execute(db, _READ, {"run_id": run.id}).one_or_none()
    updated = direct.execute(db, _SET_OUTPUT, {"w_run_id": run.id, "output": {}})
    assert updated.rowcount == 2


def test_cursor_listeners_see_each_statement(engine: Engine, db: Session) -> None:
    seen: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        direct.execute(db, _READ, {"run_id": "none"})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert seen == [direct.compile_once(_READ, engine.dialect).sql]


def test_the_statement_runs_in_the_sessions_transaction(sessions: sessionmaker[Session]) -> None:
    with sessions() as first:
        factories.bind(first)
        run = _step(first)
        first.commit()
        direct.execute(first, _SET_OUTPUT, {"w_run_id": run.id, "output": {"seen": 1}})
        with sessions() as other:  # not committed: another transaction reads the old value
            assert other.execute(_READ, {"run_id": run.id}).one().output is None
        first.rollback()
        assert first.execute(_READ, {"run_id": run.id}).one().output is None


def test_an_expanding_parameter_is_refused_at_compile_time(engine: Engine) -> None:
    listed = select(_STEPS.c.id).where(_STEPS.c.run_id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(TypeError, match="expanding"):
        direct.compile_once(listed, engine.dialect)


def test_a_constant_column_default_is_sent_as_sqlalchemy_sends_it(db: Session) -> None:
    run: Run = factories.RunFactory()
    direct.execute(db, _ADD, {"run_id": run.id, "step_id": "CompileST"})
    stored = db.execute(
        text("SELECT round, attempt_base FROM app.step_runs WHERE run_id = :r"), {"r": run.id}
    ).one()
    assert tuple(stored) == (1, 0)  # the model's defaults, absent from the statement


def test_a_default_computed_at_execution_is_refused_at_compile_time(engine: Engine) -> None:
    table = Table("t", MetaData(), Column("x", Integer, default=lambda: 1), Column("y", Integer))
    with pytest.raises(TypeError, match="'x'"):
        direct.compile_once(insert(table).values(y=bindparam("y")), engine.dialect)


def test_on_a_bare_connection_the_callers_commit_keeps_the_write(
    engine: Engine, db: Session
) -> None:
    run = _step(db)
    db.commit()
    with engine.connect() as conn:
        direct.execute(conn, _SET_OUTPUT, {"w_run_id": run.id, "output": {"kept": True}})
        conn.commit()
    with engine.connect() as conn:
        assert conn.execute(_READ, {"run_id": run.id}).one().output == {"kept": True}


_READ_PLANNED = (
    select(_STEPS.c.id)
    .where(_STEPS.c.run_id == bindparam("run_id"), _STEPS.c.fence > 0)
    .execution_options(**{direct.PLANNED_EACH_TIME: True})
)


def prepared_here(db: Session) -> list[str]:
    """The statements Postgres holds prepared on this session's connection."""
    return list(db.execute(text("SELECT statement FROM pg_prepared_statements")).scalars())


def test_a_statement_planned_each_time_is_never_prepared_where_others_are(db: Session) -> None:
    """psycopg prepares a statement once it ran five times on a connection; Postgres may
    then keep one plan for it, made while the table was small (see PLANNED_EACH_TIME)."""
    run = _step(db)
    for _ in range(8):
        direct.execute(db, _READ, {"run_id": run.id})
        assert direct.execute(db, _READ_PLANNED, {"run_id": run.id}).all()
    held = prepared_here(db)
    dialect = db.get_bind().dialect
    assert direct.compile_once(_READ, dialect).sql in held
    assert direct.compile_once(_READ_PLANNED, dialect).sql not in held
