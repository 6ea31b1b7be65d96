"""Aggregates for ``/metrics``, computed by Postgres at scrape time.

API and workers are separate processes: counters kept in a worker's memory would be
lost at restart and invisible to the API. The tables already hold every fact, so the
metrics are queries over them and any API process reports the same truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, column, func, literal, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.db.models import OpenCodeCall, PlanApproval, Run, StepRun
from shared.domain.run_machine import NextAction, RunStatus


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


def _histograms(
    s: Session,
    value: ColumnElement[Any],
    labels: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    bounds: Sequence[float],
    *where: ColumnElement[bool],
) -> list[Histogram]:
    stmt = (
        select(
            *labels,
            *(func.count().filter(value <= bound) for bound in bounds),
            func.count(),
            func.coalesce(func.sum(value), 0.0),
        )
        .where(value.is_not(None), *where)
        .group_by(*labels)
        .order_by(*labels)
    )
    n = len(labels)
    return [
        Histogram(
            labels=tuple(str(v) for v in row[:n]),
            buckets=tuple(int(c) for c in row[n : n + len(bounds)]),
            count=int(row[n + len(bounds)]),
            total=float(row[n + len(bounds) + 1]),
        )
        for row in s.execute(stmt)
    ]


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

    def step_durations(self, bounds_s: Sequence[float]) -> list[Histogram]:
        seconds = StepRun.duration_ms.cast(Float) / 1000.0
        return _histograms(self.session, seconds, [StepRun.step_id], bounds_s)

    def call_durations(self, bounds_s: Sequence[float]) -> list[Histogram]:
        seconds = OpenCodeCall.duration_ms.cast(Float) / 1000.0
        return _histograms(
            self.session, seconds, [OpenCodeCall.agent, OpenCodeCall.step_id], bounds_s
        )

    def approval_dispatch_latency(self, bounds_s: Sequence[float]) -> list[Histogram]:
        seconds = func.extract("epoch", PlanApproval.dispatched_at - PlanApproval.approved_at)
        return _histograms(
            self.session,
            seconds,
            [],
            bounds_s,
            and_(PlanApproval.approved_at.is_not(None), PlanApproval.dispatched_at.is_not(None)),
        )

    def call_usage(self) -> list[CallUsage]:
        usage = OpenCodeCall.usage
        tokens = func.coalesce(func.sum(usage["total_tokens"].astext.cast(Float)), 0)
        cost = func.coalesce(func.sum(usage["cost_usd"].astext.cast(Float)), 0.0)
        rows = self.session.execute(
            select(
                OpenCodeCall.agent,
                OpenCodeCall.step_id,
                OpenCodeCall.status,
                func.count(),
                tokens,
                cost,
            )
            .group_by(OpenCodeCall.agent, OpenCodeCall.step_id, OpenCodeCall.status)
            .order_by(OpenCodeCall.agent, OpenCodeCall.step_id, OpenCodeCall.status)
        )
        return [
            CallUsage(str(a), str(st), str(status), int(n), int(t), float(c))
            for a, st, status, n, t, c in rows
        ]

    def budgets(self) -> BudgetTotals:
        """Over the runs still active: reserved by calls in flight, spent, and how many
        wait for a larger budget; over all runs: what settled calls spent."""
        active = Run.status.not_in([s.value for s in RunStatus if s.is_terminal])
        row = self.session.execute(
            select(
                func.coalesce(func.sum(Run.spent_usd_micro), 0),
                func.coalesce(func.sum(Run.spent_tokens), 0),
                func.coalesce(func.sum(Run.reserved_usd_micro).filter(active), 0),
                func.coalesce(func.sum(Run.reserved_tokens).filter(active), 0),
                func.count().filter(Run.next_action == NextAction.AWAIT_BUDGET.value),
            )
        ).one()
        return BudgetTotals(
            spent_usd=int(row[0]) / 1_000_000,
            spent_tokens=int(row[1]),
            reserved_usd=int(row[2]) / 1_000_000,
            reserved_tokens=int(row[3]),
            waiting=int(row[4]),
        )

    def answer_sources(self) -> dict[str, int]:
        """How step attempts got their answer: ``miss`` (a paid call), ``l1`` or ``l2``.

        The worker records each attempt's cache level in ``step_runs.output.attempts``.
        """
        listed = StepRun.output["attempts"]
        attempt = (
            func.jsonb_array_elements(
                case(
                    (func.jsonb_typeof(listed) == "array", listed),
                    else_=literal([], JSONB),
                )
            )
            .table_valued(column("value", JSONB))
            .lateral("attempt")
        )
        level = attempt.c.value["cache"].astext
        rows = self.session.execute(
            select(level, func.count())
            .select_from(StepRun)
            .join(attempt, true())
            .where(level.is_not(None))
            .group_by(level)
        )
        return {str(lvl): int(n) for lvl, n in rows}
