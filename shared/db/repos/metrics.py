"""Aggregates for ``/metrics``, computed by Postgres at scrape time.

API and workers are separate processes: counters kept in a worker's memory would be
lost at restart and invisible to the API. The tables already hold every fact, so the
metrics are queries over them and any API process reports the same truth.

Whole-history aggregates (durations, call usage, answer sources, approval latency,
what runs spent) are not recomputed at every scrape: ``app.metrics_rollup`` holds
them over every fact stamped before its watermark (``shared.db.repos.metric_facts``
says which facts, and why none changes once stamped), ``fold`` moves the watermark
forward to a horizon, and ``history`` adds the facts stamped since. A scrape reads
the rows stamped since the previous fold, the rows of the last ``SETTLE_LAG``, and a
few dozen rollup cells, whatever the history's length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Interval, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import MetricsRollup, MetricsRollupState, Run
from shared.db.repos import metric_facts as facts
from shared.db.repos.metric_facts import Bounds, Cell, Cells, Window
from shared.domain.run_machine import ACTIVE, NextAction, RunStatus

__all__ = ["SETTLE_LAG", "Bounds", "BudgetTotals", "CallUsage", "Histogram", "History"]

SETTLE_LAG = timedelta(minutes=5)
"""Facts younger than this are never folded, whatever ``pg_stat_activity`` says: the
margin for a transaction it does not show (another role's) and for a clock step."""

ROLLUP_VERSION = 1
"""Part of the rollup's spec: a change to what a family aggregates must bump it (the
rollup then starts over)."""

_FOLD_LOCK = 0x6B6F646F_6D747231  # "kodomtr1": one folder at a time, the others read
_STATE_ID = 1

_HORIZON = text(
    "SELECT least(statement_timestamp() - :lag, ("
    " SELECT min(xact_start) FROM pg_catalog.pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type <> 'autovacuum worker'))"
).bindparams(bindparam("lag", type_=Interval))
"""The newest stamp safe to fold up to. A transaction stamps no earlier than it began
(``now()``, ``statement_timestamp()``), so one still open may yet commit a fact stamped
at or after its start, never before: below the oldest open transaction's start (and
this statement's time) every fact that will ever exist is already committed. Read
before the fold's statements take their snapshots (READ COMMITTED): a transaction that
ends in between is seen by them, one that begins in between stamps later than this."""


@dataclass(frozen=True)
class Histogram:
    """One labelled histogram: cumulative counts at each bound, then count and sum."""

    labels: tuple[str, ...]
    buckets: tuple[int, ...]
    count: int
    total: float


@dataclass(frozen=True)
class BudgetTotals:
    spent_usd: float
    spent_tokens: int
    reserved_usd: float
    reserved_tokens: int
    waiting: int  # runs stopped on their budget


@dataclass(frozen=True)
class CallUsage:
    agent: str
    step_id: str
    status: str
    calls: int
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class History:
    """The whole-history aggregates: the rollup plus the facts stamped since."""

    step_durations: list[Histogram]
    call_durations: list[Histogram]
    dispatch_latency: list[Histogram]
    call_usage: list[CallUsage]
    answer_sources: dict[str, int]
    spent_usd_micro: int
    spent_tokens: int
    folded_until: datetime | None  # the rollup's watermark (None: all read live)


def spec_of(bounds: Bounds) -> str:
    """What the rollup was folded for: its version and the bucket bounds."""
    return json.dumps(
        {
            "version": ROLLUP_VERSION,
            "steps": bounds.steps,
            "calls": bounds.calls,
            "dispatch": bounds.dispatch,
        },
        sort_keys=True,
    )


def _histograms(cells: Cells, family: str, scale: int, keep_empty: bool) -> list[Histogram]:
    found = [
        Histogram(
            labels=labels,
            buckets=cell.counts[:-1],
            count=cell.counts[-1],
            total=float(cell.sums[0] / scale),
        )
        for (fam, labels), cell in cells.items()
        if fam == family and (cell.counts[-1] or keep_empty)
    ]
    return sorted(found, key=lambda h: h.labels)


class MetricsRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def runs_by_status(self) -> dict[str, int]:
        """Every status, zero included (a series that vanishes reads as "no data")."""
        counts = dict.fromkeys((st.value for st in RunStatus), 0)
        for status, n in self.session.execute(
            select(Run.status, func.count()).group_by(Run.status)
        ):
            counts[status] = int(n)
        return counts

    def stuck_runs(self, updated_before: datetime) -> dict[str, int]:
        """Runs the system should be moving (not terminal, not waiting for a human or for
        an upgrade) but isn't."""
        idle = {RunStatus.WAITING_INPUT, RunStatus.WAITING_UPGRADE}
        # Named, not "none of the others": the live ones are read by index, whatever
        # the number of ended runs (an audit at 200k runs: 21k buffers -> ~350)
        moving = [st.value for st in RunStatus if not st.is_terminal and st not in idle]
        rows = self.session.execute(
            select(Run.status, func.count())
            .where(Run.status.in_(moving), Run.updated_at < updated_before)
            .group_by(Run.status)
        )
        return {status: int(n) for status, n in rows}

    def budgets(self, history: History) -> BudgetTotals:
        """Over the runs still active (read by their status's index): reserved by calls
        in flight, and how many wait for a larger budget (only an active run can:
        every move to a terminal status sets ``next_action`` none); over all runs: what
        settled calls spent (``history``)."""
        row = self.session.execute(
            select(
                func.coalesce(func.sum(Run.reserved_usd_micro), 0),
                func.coalesce(func.sum(Run.reserved_tokens), 0),
                func.count().filter(Run.next_action == NextAction.AWAIT_BUDGET.value),
            ).where(Run.status.in_(sorted(s.value for s in ACTIVE)))
        ).one()
        return BudgetTotals(
            spent_usd=history.spent_usd_micro / 1_000_000,
            spent_tokens=history.spent_tokens,
            reserved_usd=int(row[0]) / 1_000_000,
            reserved_tokens=int(row[1]),
            waiting=int(row[2]),
        )

    def fold_in_transaction(self, bounds: Bounds, lag: timedelta = SETTLE_LAG) -> datetime | None:
        """Fold the facts stamped since the watermark, up to the horizon, into the rollup;
        the new watermark, or None if another session is folding (it is not waited for).

        Runs in the caller's transaction (READ COMMITTED), which must commit to keep
        the fold: the advisory lock is the transaction's, so two scrapes never fold
        the same facts twice. A rollup kept for other bounds is started over.
        """
        s = self.session
        if not s.execute(select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))).scalar_one():
            return None
        spec = spec_of(bounds)
        state = s.execute(
            select(MetricsRollupState.watermark, MetricsRollupState.spec).where(
                MetricsRollupState.id == _STATE_ID
            )
        ).one_or_none()
        since: datetime | None = state.watermark if state and state.spec == spec else None
        if state is None or state.spec != spec:
            s.execute(delete(MetricsRollup))
            s.execute(
                insert(MetricsRollupState)
                .values(id=_STATE_ID, watermark=None, spec=spec)
                .on_conflict_do_update(
                    index_elements=[MetricsRollupState.id], set_={"watermark": None, "spec": spec}
                )
            )
        until: datetime | None = s.execute(_HORIZON, {"lag": lag}).scalar_one()
        if until is None:  # pragma: no cover - least() of a timestamp is never NULL
            raise RuntimeError("no horizon")
        if since is not None and until <= since:
            return since  # nothing older is settled yet
        cells = self._cells()
        delta = facts.collect(s, Window(since, until), bounds)
        rows = []
        for key, more in delta.items():
            had = cells.get(key)
            cell = more if had is None else had.plus(more)
            rows.append(
                {
                    "family": key[0],
                    "labels": list(key[1]),
                    "counts": list(cell.counts),
                    "sums": list(cell.sums),
                }
            )
        if rows:
            stmt = insert(MetricsRollup)
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[MetricsRollup.family, MetricsRollup.labels],
                    set_={"counts": stmt.excluded.counts, "sums": stmt.excluded.sums},
                ),
                rows,
            )
        s.execute(
            update(MetricsRollupState)
            .where(MetricsRollupState.id == _STATE_ID)
            .values(watermark=until, folded_at=func.statement_timestamp())
        )
        return until

    def _cells(self) -> Cells:
        return {
            (fam, tuple(labels)): Cell(tuple(counts), tuple(sums))
            for fam, labels, counts, sums in self.session.execute(
                select(
                    MetricsRollup.family,
                    MetricsRollup.labels,
                    MetricsRollup.counts,
                    MetricsRollup.sums,
                )
            )
        }

    def history(self, bounds: Bounds) -> History:
        """The whole-history aggregates: the rollup (if kept for these bounds) plus the
        facts stamped at or after its watermark, read by index. Exact at any watermark,
        so a fold committing meanwhile changes nothing; one snapshot (REPEATABLE READ)
        reads the rollup and the live facts alike."""
        s = self.session
        state = s.execute(
            select(MetricsRollupState.watermark, MetricsRollupState.spec).where(
                MetricsRollupState.id == _STATE_ID
            )
        ).one_or_none()
        kept = state is not None and state.spec == spec_of(bounds) and state.watermark is not None
        since = state.watermark if kept and state is not None else None
        cells = self._cells() if since is not None else {}
        facts.merge(cells, facts.collect(s, Window(since, None), bounds))
        usage = [
            CallUsage(a, st, status, cell.counts[0], int(cell.sums[0]), float(cell.sums[1]))
            for (fam, (a, st, status)), cell in sorted(
                (k, v) for k, v in cells.items() if k[0] == facts.CALL_USAGE
            )
            if cell.counts[0]
        ]
        spent = cells.get((facts.SPENT, ()), Cell((), (Decimal(0), Decimal(0))))
        return History(
            step_durations=_histograms(cells, facts.STEP_DURATION, 1000, keep_empty=False),
            call_durations=_histograms(cells, facts.CALL_DURATION, 1000, keep_empty=False),
            dispatch_latency=_histograms(cells, facts.DISPATCH_LATENCY, 1, keep_empty=True),
            call_usage=usage,
            answer_sources={
                labels[0]: cell.counts[0]
                for (fam, labels), cell in sorted(cells.items())
                if fam == facts.ANSWER_SOURCE and cell.counts[0]
            },
            spent_usd_micro=int(spent.sums[0]),
            spent_tokens=int(spent.sums[1]),
            folded_until=since,
        )
