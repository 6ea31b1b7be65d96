"""Hot statements sent straight to the transaction's psycopg connection, compiled once.

A run executes about 78 statements, most of them the same dozen prebuilt ones (take a
step's lease, read its snapshot, claim and record a call, record an outcome). Measured
on the bench machine for one of them: ``Session.execute`` costs about 270 us of CPU, a
Core ``Connection.execute`` about 180 and psycopg itself about 75; the difference is
SQLAlchemy building a cache key, processing parameters and result metadata anew for a
statement whose text never changes. :func:`execute` compiles such a statement once per
dialect and runs its text on the session's own connection:

* the same transaction (``Session.connection()``), after the same autoflush;
* the same errors: a DBAPI error goes through SQLAlchemy's handler (wrapped as
  ``IntegrityError``, ``OperationalError``..., a dead connection invalidated);
* the same ``before_cursor_execute`` (a retval listener may rewrite) and
  ``after_cursor_execute`` listeners, without an ExecutionContext (the bench counts
  every statement);
* the same parameter values on the wire: each bind's type processor (JSONB) and a
  column's constant default applied.

The text is sent as PostgreSQL's own (``$1``, ``$2``... in a ``RawCursor``), compiled
once by SQLAlchemy in its ``numeric_dollar`` style: psycopg then has no ``%(name)s`` to
parse and reorder per execution. It did that with a regex on every statement longer
than its cache takes (4096 bytes: the lease-taking snapshot is 5.9 kB), 2% of a worker's
CPU under the bench's load (py-spy), and a cache lookup for the rest. The listeners see
that text and the values in its order.

What SQLAlchemy would have run differently is refused instead: a missing parameter
(never sent as NULL), a key the statement does not bind (SQLAlchemy compiles one named
like a column into a SET), a name it must escape, an expanding parameter, a default
computed at execution. Only module-level statements belong here (the cache is keyed on
the object and keeps it); rows come back as named tuples, read through :class:`Rows`'
subset of ``Result``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg import RawCursor
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

PLANNED_EACH_TIME = "kodo_planned_each_time"
"""An execution option: the statement is planned on every execution, never prepared.

psycopg prepares a statement on a connection once it ran five times there, and Postgres
then keeps one generic plan for it if that plan looked no worse than the first ones.
For a lookup whose best plan depends on the table's size (``= ANY(array)``, whose
generic estimate is a fixed share of the rows), a plan made while the table was nearly
empty is a sequential scan, kept for the pooled connection's life while the table
grows, until an ``ANALYZE`` invalidates it: on a database nothing analyzes, the
collector's wake-up read every page of the ledger (375 pages a call at a thousand
calls, 1.04 ms). Planned each time it reads 17 (0.29 ms, and 0.21 of planning)."""


@dataclass(frozen=True)
class Compiled:
    """A statement's text for one dialect, with what its parameters need."""

    sql: str  # with PostgreSQL's placeholders: $1 is the value of order[0]...
    order: tuple[str, ...]  # each placeholder's parameter name
    defaults: Mapping[str, Any]  # values bound at build time (a status literal...)
    required: frozenset[str]  # names the caller must pass
    names: frozenset[str]  # every name the caller may pass
    processors: Mapping[str, Callable[[Any], Any]]  # type processors (JSONB)
    prepare: bool | None = None  # psycopg's: None prepares after 5 runs, False never


_cache: dict[tuple[int, type[Dialect]], tuple[Executable, Compiled]] = {}
_cache_lock = threading.Lock()


_dollar_dialects: dict[type[DefaultDialect], DefaultDialect] = {}


def _dollar_dialect(dialect: Dialect) -> DefaultDialect:
    """A dialect of this one's kind rendering PostgreSQL's own ``$n`` placeholders (each
    name one number, however often the statement binds it)."""
    if not isinstance(dialect, DefaultDialect):
        raise TypeError(f"direct.execute cannot number parameters for {type(dialect).__name__}")
    kind = type(dialect)
    found = _dollar_dialects.get(kind)
    if found is None:
        found = _dollar_dialects.setdefault(kind, kind(paramstyle="numeric_dollar"))
    return found


def compile_once(stmt: Executable, dialect: Dialect) -> Compiled:
    """The statement's :class:`Compiled` form, built on first use and kept with it."""
    key = (id(stmt), type(dialect))
    found = _cache.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    if not isinstance(compiled, SQLCompiler) or compiled.positional:
        raise TypeError(f"direct.execute needs named parameters: {type(compiled).__name__}")
    if compiled.escaped_bind_names:  # the text reads another name than the caller passes
        raise TypeError(f"direct.execute cannot send escaped names {compiled.escaped_bind_names}")
    processors: dict[str, Callable[[Any], Any]] = {}
    required: set[str] = set()
    for bind in compiled.binds.values():
        if bind.expanding or bind.literal_execute:
            raise TypeError(f"direct.execute cannot send expanding parameter {bind.key!r}")
        name = compiled.bind_names[bind]
        if bind.required:
            required.add(name)
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    defaults = {k: v for k, v in compiled.params.items() if k not in required}
    # Columns whose Python-side default (INSERT) or onupdate (UPDATE) SQLAlchemy would
    # compute as it executes: a constant is sent as the default; anything else refused.
    for columns, attr in (
        (compiled.insert_prefetch, "default"),
        (compiled.update_prefetch, "onupdate"),
    ):
        for column in columns:
            made_by = getattr(column, attr)
            if made_by is None or not made_by.is_scalar:
                raise TypeError(f"direct.execute cannot compute {column.key!r}'s {attr}")
            defaults[column.key] = made_by.arg
    dollar = stmt.compile(dialect=_dollar_dialect(dialect))  # type: ignore[attr-defined]
    if not isinstance(dollar, SQLCompiler) or dollar.positiontup is None:
        raise TypeError(f"direct.execute cannot number the parameters of {type(stmt).__name__}")
    if set(dollar.positiontup) != set(compiled.bind_names.values()):
        raise TypeError("direct.execute: the numbered text binds other names than the named one")
    made = Compiled(
        sql=dollar.string,
        order=tuple(dollar.positiontup),
        defaults=defaults,
        required=frozenset(required),
        names=frozenset(compiled.params),
        processors=processors,
        prepare=False if stmt.get_execution_options().get(PLANNED_EACH_TIME) else None,
    )
    with _cache_lock:
        _cache[key] = (stmt, made)
    return made


class Rows:
    """What a hot statement returned: the part of ``Result`` the repositories read.

    ``rowcount`` is psycopg's, and the key an INSERT returns for SQLAlchemy's own use
    (its implicit RETURNING) is a row here: an INSERT ... ON CONFLICT DO NOTHING counts
    1 or 0 and returns the new key or nothing, where SQLAlchemy says -1 and no rows. A
    statement that returns no rows (no RETURNING) refuses to be read, as SQLAlchemy's
    closed result does.
    """

    def __init__(self, rows: Sequence[NamedTuple] | None, rowcount: int) -> None:
        self._returned = rows
        self.rowcount = rowcount

    @property
    def returns_rows(self) -> bool:
        return self._returned is not None

    @property
    def _rows(self) -> Sequence[NamedTuple]:
        if self._returned is None:
            raise exc.ResourceClosedError("This result object does not return rows.")
        return self._returned

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any | None:
        rows = self._rows
        return rows[0] if rows else None

    def one_or_none(self) -> Any | None:
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise exc.NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any | None:
        first = self.first()
        return None if first is None else first[0]

    def scalar_one_or_none(self) -> Any | None:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]


@dataclass(frozen=True)
class Lone:
    """A pooled connection whose statements each run alone (autocommit), with no
    ``Session`` around them: see :func:`alone`."""

    # Built on the pooled connection and never begun: what the listeners are handed and
    # what turns a DBAPI error into SQLAlchemy's (a dead connection invalidated).
    connection: Connection
    driver: psycopg.Connection[Any]


Where = Session | Connection | Lone
"""Where a prebuilt statement runs: a session's transaction, a connection's, or alone."""


@contextmanager
def alone(engine: Engine) -> Iterator[Lone]:
    """A connection of ``engine``'s pool for prebuilt statements that each run alone,
    outside any transaction (autocommit): Postgres runs each on its own snapshot and
    commits each that writes on its own, durably, as a one-statement transaction would,
    without the BEGIN and COMMIT round trips. Under READ COMMITTED a transaction gives
    statements nothing more than that but atomicity: never for statements that must
    commit together, nor for a write its caller may still want rolled back (a check
    raised after it).

    What a ``Session`` would add is left out: its transaction bookkeeping, the
    connection wrapper it opens and the isolation level it switches through SQLAlchemy's
    execution options and back. Measured on this machine for one short SELECT: 240 us
    of CPU through a Session switched to AUTOCOMMIT, 150 this way. The pool's checkout
    (and its ping of an idle connection) and check-in are the same; the driver's
    autocommit is switched on here and off again before the connection goes back, so a
    transaction that checks it out next is one. A connection that broke is discarded,
    never pooled.
    """
    pooled = engine.raw_connection()
    driver = pooled.driver_connection
    try:
        if not isinstance(driver, psycopg.Connection):
            raise TypeError(f"direct.alone needs a psycopg connection, not {type(driver)}")
        driver.autocommit = True
        yield Lone(Connection(engine, connection=pooled), driver)
    finally:
        if pooled.is_valid and isinstance(driver, psycopg.Connection):
            try:
                driver.autocommit = False
            except psycopg.Error as err:  # closed under us: never back into the pool
                pooled.invalidate(err)
        pooled.close()


def session_of(where: Where) -> Session:
    """``where``'s ORM session, for statements built per call; refused for a connection."""
    if not isinstance(where, Session):
        raise TypeError(f"a statement built per call needs a Session, not {type(where).__name__}")
    return where


def _connection(where: Where) -> Connection:
    if isinstance(where, Lone):
        return where.connection  # no transaction to begin: each statement is its own
    if isinstance(where, Connection):
        if not where.in_transaction():
            where.begin()  # autobegin, as Connection.execute would: its commit() then counts
        return where
    if where.autoflush:
        where.flush()  # as Session.execute would: pending objects reach the database first
    return where.connection()


def parameters(compiled: Compiled, params: Mapping[str, Any]) -> dict[str, Any]:
    """The values sent: build-time defaults, then the caller's, each through its type.

    A missing name is refused, never sent as NULL; so is a name the statement does not
    bind (``Session.execute`` would have turned one named like a column into a SET)."""
    missing = compiled.required - params.keys()
    if missing:
        raise exc.ArgumentError(f"a value is required for bind parameter(s) {sorted(missing)}")
    unknown = params.keys() - compiled.names
    if unknown:
        raise exc.ArgumentError(f"not a bind parameter of the statement: {sorted(unknown)}")
    sent = {**compiled.defaults, **params}
    for name, process in compiled.processors.items():
        if name in sent:
            sent[name] = process(sent[name])
    return sent


def execute(where: Where, stmt: Executable, params: Mapping[str, Any] | None = None) -> Rows:
    """Run a prebuilt statement in ``where``'s transaction (see the module docstring)."""
    conn = _connection(where)
    compiled = compile_once(stmt, conn.dialect)
    dbapi = conn.connection.driver_connection
    if dbapi is None:
        raise exc.InvalidRequestError("the connection has no DBAPI connection")
    sql: str = compiled.sql
    sent: Any = dict(params or {})
    cursor: Any = RawCursor(dbapi, row_factory=namedtuple_row)  # SQLAlchemy's DBAPICursor
    try:
        named = parameters(compiled, sent)
        sent = [named[name] for name in compiled.order]
        # Listeners get no ExecutionContext (there is none); a retval listener may
        # rewrite the text or the values, as on Connection.execute.
        for before in conn.dispatch.before_cursor_execute:
            sql, sent = before(conn, cursor, sql, sent, None, False)
        cursor.execute(sql, sent, prepare=compiled.prepare)
        for after in conn.dispatch.after_cursor_execute:
            after(conn, cursor, sql, sent, None, False)
        if cursor.description is None:
            return Rows(None, cursor.rowcount)
        return Rows(cursor.fetchall(), cursor.rowcount)
    except BaseException as err:  # as Connection.execute: wrapped, a broken link invalidated
        conn._handle_dbapi_exception(err, sql, sent, cursor, None)
    finally:
        cursor.close()
