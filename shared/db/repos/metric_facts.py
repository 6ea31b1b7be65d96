"""The facts ``/metrics`` aggregates, each found by the database time that made it.

``shared.db.repos.metrics`` keeps the aggregates of every fact stamped before a
watermark in ``app.metrics_rollup`` and adds the newer ones at each scrape. That is
exact only if a fact, once stamped, never changes, and is found by its stamp:

* a step round's outcome (``step_id``, ``duration_ms``, ``output``), stamped
  ``finished_at`` by the statement that records it. A new round of the step moves the
  ended one from ``step_runs`` to ``step_rounds`` (the same values) and starts the next
  (``started_at``, round > 1) in one transaction: the ended round stops counting then.
  So the current ``step_runs`` = every outcome ever (``step_runs`` and ``step_rounds``,
  by ``finished_at``) minus every round ended by its successor (by the successor's
  ``started_at``), each a fact that never changes.
* a provider call, stamped ``settled_at`` by ``app.settle_call`` when its status
  becomes final: nothing read here changes after (only ``claimed``, ``sent`` and
  ``unknown`` calls move on, and those have no ``settled_at``: they are read live).
* an approval's dispatch, stamped ``dispatched_at`` (set once).
* what runs spent: a run's ``spent_*`` at its ``created_at`` plus what each call settled
  since added (``app.settle_call``, the only writer of ``spent_*``).

Every stamp is the database's ``now()`` or ``statement_timestamp()``, never a host's:
a transaction cannot stamp earlier than it started, which is what makes a horizon safe
to fold up to (``horizon`` in ``shared.db.repos.metrics``).
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Numeric,
    Subquery,
    and_,
    case,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from shared.db.models import OpenCodeCall, PlanApproval, Run, StepRound, StepRun

STEP_DURATION = "step_duration"
CALL_DURATION = "call_duration"
DISPATCH_LATENCY = "dispatch_latency"
CALL_USAGE = "call_usage"
ANSWER_SOURCE = "answer_source"
SPENT = "spent"

Key = tuple[str, tuple[str, ...]]
"""A rollup cell: (family, label values)."""

_EXACT = decimal.Context(prec=200)
"""Sums are added exactly (Python's default context would round at 28 digits)."""


@dataclass(frozen=True)
class Cell:
    """One family's aggregates for one set of label values: counts (a histogram's
    cumulative buckets, then its count) and exact sums."""

    counts: tuple[int, ...]
    sums: tuple[Decimal, ...]

    def plus(self, other: Cell) -> Cell:
        return Cell(
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            tuple(_EXACT.add(a, b) for a, b in zip(self.sums, other.sums, strict=True)),
        )


Cells = dict[Key, Cell]


def merge(into: Cells, more: Cells) -> None:
    for key, cell in more.items():
        had = into.get(key)
        into[key] = cell if had is None else had.plus(cell)


@dataclass(frozen=True)
class Window:
    """Facts stamped at or after ``since`` (None: from the first) and before ``until``.

    ``until`` None is the live window: up to now, and with it the rows no stamp
    places (calls not settled; step rows holding an outcome without ``finished_at``,
    which only hand-written rows do), which are never folded.
    """

    since: datetime | None
    until: datetime | None

    @property
    def live(self) -> bool:
        return self.until is None

    def holds(self, stamp: Any) -> list[ColumnElement[bool]]:
        held: list[ColumnElement[bool]] = []
        if self.since is not None:
            held.append(stamp >= self.since)
        if self.until is not None:
            held.append(stamp < self.until)
        return held or [stamp.is_not(None)]


@dataclass(frozen=True)
class Bounds:
    """The histograms' bucket bounds (seconds); the rollup is kept for one set."""

    steps: tuple[float, ...]
    calls: tuple[float, ...]
    dispatch: tuple[float, ...]


# A literal, not a parameter: the partial indexes' "round > 1" must be provable.
_ONE: ColumnElement[int] = literal_column("1", Integer)


def _step_outcomes(w: Window) -> Subquery:
    """(sign, step_id, duration_ms, output): +1 per round outcome stamped in ``w``,
    -1 per ended round whose successor started in ``w``."""
    branches = [
        select(_ONE.label("sign"), t.step_id, t.duration_ms, t.output).where(
            *w.holds(t.finished_at)
        )
        for t in (StepRun, StepRound)
    ]
    for successor in (StepRun, StepRound):
        ended = aliased(StepRound)
        branches.append(
            select(literal_column("-1", Integer), ended.step_id, ended.duration_ms, ended.output)
            .select_from(successor)
            .join(
                ended,
                and_(
                    ended.run_id == successor.run_id,
                    ended.step_id == successor.step_id,
                    ended.round == successor.round - 1,
                ),
            )
            .where(successor.round > _ONE, *w.holds(successor.started_at))
        )
    if w.live:
        branches.append(
            select(_ONE, StepRun.step_id, StepRun.duration_ms, StepRun.output).where(
                StepRun.finished_at.is_(None),
                or_(StepRun.duration_ms.is_not(None), StepRun.output.is_not(None)),
            )
        )
        branches.append(
            select(_ONE, StepRound.step_id, StepRound.duration_ms, StepRound.output).where(
                StepRound.finished_at.is_(None)
            )
        )
    return union_all(*branches).subquery("outcome")


def _calls(w: Window) -> Subquery:
    c = OpenCodeCall
    shown = (_ONE.label("sign"), c.agent, c.step_id, c.status, c.duration_ms, c.usage)
    branches = [select(*shown).where(*w.holds(c.settled_at))]
    if w.live:
        branches.append(select(*shown).where(c.settled_at.is_(None)))
    return union_all(*branches).subquery("call")


def _histograms(
    s: Session,
    family: str,
    source: Subquery,
    labels: Sequence[Any],
    bucketed: ColumnElement[Any],
    summed: ColumnElement[Any],
    bounds: Sequence[float],
) -> Cells:
    """Per label values: how many (signed) values fall at or under each bound (as
    ``bucketed`` compares, the same expression the whole-history query used), how
    many there are, and the exact sum of ``summed``."""
    sign = source.c.sign
    stmt = (
        select(
            *labels,
            *(func.sum(sign).filter(bucketed <= bound) for bound in bounds),
            func.sum(sign),
            func.sum(sign * summed),
        )
        .where(summed.is_not(None))
        .group_by(*labels)
    )
    n, k = len(labels), len(bounds)
    return {
        (family, tuple(str(v) for v in row[:n])): Cell(
            tuple(int(c or 0) for c in row[n : n + k + 1]), (Decimal(row[n + k + 1] or 0),)
        )
        for row in s.execute(stmt)
    }


def _seconds_of(ms: ColumnElement[Any]) -> ColumnElement[Any]:
    return ms.cast(Float) / 1000.0


def _attempt_sources(s: Session, outcomes: Subquery) -> Cells:
    listed = outcomes.c.output["attempts"]
    attempt = (
        func.jsonb_array_elements(
            case((func.jsonb_typeof(listed) == "array", listed), else_=literal([], JSONB))
        )
        .table_valued(column("value", JSONB))
        .lateral("attempt")
    )
    level = attempt.c.value["cache"].astext
    rows = s.execute(
        select(level, func.sum(outcomes.c.sign))
        .select_from(outcomes)
        .join(attempt, true())
        .where(level.is_not(None))
        .group_by(level)
    )
    return {(ANSWER_SOURCE, (str(lvl),)): Cell((int(n),), ()) for lvl, n in rows}


def _call_usage(s: Session, calls: Subquery) -> Cells:
    usage = calls.c.usage
    labels = (calls.c.agent, calls.c.step_id, calls.c.status)
    rows = s.execute(
        select(
            *labels,
            func.sum(calls.c.sign),
            func.sum(usage["total_tokens"].astext.cast(Numeric)),
            func.sum(usage["cost_usd"].astext.cast(Numeric)),
        ).group_by(*labels)
    )
    return {
        (CALL_USAGE, (str(a), str(st), str(status))): Cell(
            (int(n),), (Decimal(t or 0), Decimal(c or 0))
        )
        for a, st, status, n, t, c in rows
    }


def _dispatches(w: Window) -> Subquery:
    a = PlanApproval
    seconds = func.extract("epoch", a.dispatched_at - a.approved_at)
    return (
        select(_ONE.label("sign"), seconds.label("seconds"))
        .where(a.approved_at.is_not(None), a.dispatched_at.is_not(None), *w.holds(a.dispatched_at))
        .subquery("dispatch")
    )


def _spent(s: Session, w: Window) -> Cells:
    """What runs spent, as the facts stamped in ``w`` add to it: the runs created in
    it as they stand (less what calls settled after ``w`` added), and what calls
    settled in it added to runs created before it."""
    r, c = Run, OpenCodeCall
    # What app.settle_call spent for each call (migration 0027), summed.
    usd = func.coalesce(func.sum(c.spent_usd_micro), 0)
    tokens = func.coalesce(func.sum(c.spent_tokens), 0)
    parts: list[Any] = [
        select(func.coalesce(func.sum(r.spent_usd_micro), 0)).where(*w.holds(r.created_at)),
        select(func.coalesce(func.sum(r.spent_tokens), 0)).where(*w.holds(r.created_at)),
    ]
    runs = c.run_id == r.id
    if w.since is not None:
        earlier = (*w.holds(c.settled_at), r.created_at < w.since)
        parts += [select(usd).where(runs, *earlier), select(tokens).where(runs, *earlier)]
    if w.until is not None:
        later = (c.settled_at >= w.until, *w.holds(r.created_at))
        parts += [select(-usd).where(runs, *later), select(-tokens).where(runs, *later)]
    row = s.execute(select(*(p.scalar_subquery() for p in parts))).one()
    return {(SPENT, ()): Cell((), (Decimal(sum(row[0::2])), Decimal(sum(row[1::2]))))}


def collect(s: Session, w: Window, bounds: Bounds) -> Cells:
    """Every family's aggregates over the facts of ``w``."""
    cells: Cells = {}
    outcomes = _step_outcomes(w)
    step_ms = outcomes.c.duration_ms
    merge(
        cells,
        _histograms(
            s,
            STEP_DURATION,
            outcomes,
            [outcomes.c.step_id],
            _seconds_of(step_ms),
            step_ms,
            bounds.steps,
        ),
    )
    merge(cells, _attempt_sources(s, outcomes))
    calls = _calls(w)
    call_ms = calls.c.duration_ms
    labels = [calls.c.agent, calls.c.step_id]
    merge(
        cells,
        _histograms(s, CALL_DURATION, calls, labels, _seconds_of(call_ms), call_ms, bounds.calls),
    )
    merge(cells, _call_usage(s, calls))
    dispatch = _dispatches(w)
    seconds = dispatch.c.seconds
    merge(
        cells,
        _histograms(s, DISPATCH_LATENCY, dispatch, [], seconds, seconds, bounds.dispatch),
    )
    merge(cells, _spent(s, w))
    return cells
