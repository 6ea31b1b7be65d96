"""``GET /metrics``: Prometheus text, computed from Postgres at scrape time.

A custom collector queries the tables on every scrape (``shared.db.repos.metrics``),
so every API process reports the same numbers, whichever worker did the work and
however often processes restarted. If Postgres does not answer, only
``kodo_metrics_database_up 0`` is reported: a scrape never pretends to know.

Each scrape first folds the history settled since the last fold into the rollup (one
short transaction; skipped while another process folds), then reads the rollup and
the newer rows in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock
from shared.db.repos.metrics import SETTLE_LAG, Bounds, Histogram, MetricsRepo
from shared.domain.vocab import CallStatus

from .openapi import Routes
from .state import api

log = logging.getLogger(__name__)

routes = Routes("metrics", __name__, description="Prometheus metrics")

STUCK_AFTER = timedelta(minutes=15)
STEP_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
CALL_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
DISPATCH_BUCKETS_S = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300)
BOUNDS = Bounds(STEP_BUCKETS_S, CALL_BUCKETS_S, DISPATCH_BUCKETS_S)


def _histogram(
    name: str, doc: str, label_names: Sequence[str], rows: list[Histogram], bounds: Sequence[float]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(label_names))
    for row in rows:
        buckets = [(str(float(b)), c) for b, c in zip(bounds, row.buckets, strict=True)]
        buckets.append(("+Inf", row.count))
        family.add_metric(list(row.labels), buckets, row.total)
    return family


class KodoCollector(Collector):
    """Every kodo metric, from one read-only transaction per scrape."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        stuck_after: timedelta = STUCK_AFTER,
        settle_lag: timedelta = SETTLE_LAG,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.stuck_after = stuck_after
        self.settle_lag = settle_lag

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "kodo_metrics_database_up", "1 if Postgres answered this scrape's queries"
        )
        try:
            families = self._from_database()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def fold(self) -> datetime | None:
        """Fold what settled since the last fold (None: another process is folding, or
        the fold failed: the scrape is exact without it, only slower)."""
        try:
            with self.sessions() as s, s.begin():
                return MetricsRepo(s).fold_in_transaction(BOUNDS, self.settle_lag)
        except SQLAlchemyError as exc:
            log.warning("metrics: rollup not folded (%s)", type(exc).__name__)
            return None

    def _from_database(self) -> list[Metric]:
        self.fold()
        with self.sessions() as s, s.begin():
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            repo = MetricsRepo(s)
            by_status = repo.runs_by_status()
            stuck = repo.stuck_runs(self.clock.now() - self.stuck_after)
            history = repo.history(BOUNDS)
            budgets = repo.budgets(history)
        steps, calls, usage = history.step_durations, history.call_durations, history.call_usage
        sources, dispatch = history.answer_sources, history.dispatch_latency

        runs = GaugeMetricFamily("kodo_runs", "Runs by status", labels=["status"])
        for status, n in by_status.items():
            runs.add_metric([status], n)
        waiting = GaugeMetricFamily(
            "kodo_approvals_waiting", "Runs waiting for a human decision on their plan"
        )
        waiting.add_metric([], by_status.get("waiting_input", 0))
        parked = GaugeMetricFamily(
            "kodo_runs_waiting_upgrade",
            "Runs parked by a worker of another step contract, waiting for a worker of theirs",
        )
        parked.add_metric([], by_status.get("waiting_upgrade", 0))
        stuck_runs = GaugeMetricFamily(
            "kodo_runs_stuck",
            f"Runs neither terminal nor waiting for approval or an upgrade, not updated for over "
            f"{int(self.stuck_after.total_seconds())}s",
            labels=["status"],
        )
        for status, n in stuck.items():
            stuck_runs.add_metric([status], n)
        call_count = CounterMetricFamily(
            "kodo_provider_calls",
            "Provider calls in the ledger",
            labels=["agent", "step_id", "status"],
        )
        tokens = CounterMetricFamily(
            "kodo_provider_tokens",
            "Tokens used by provider calls, as their daemons counted them"
            " (kodo_budget_spent: what the budgets spent)",
            labels=["agent", "step_id"],
        )
        cost = CounterMetricFamily(
            "kodo_provider_cost_usd",
            "Cost of provider calls (USD), as their daemons counted it"
            " (kodo_budget_spent: what the budgets spent)",
            labels=["agent", "step_id"],
        )
        token_sums: dict[tuple[str, str], tuple[int, float]] = {}
        unknown = 0
        for u in usage:
            call_count.add_metric([u.agent, u.step_id, u.status], u.calls)
            t, c = token_sums.get((u.agent, u.step_id), (0, 0.0))
            token_sums[(u.agent, u.step_id)] = (t + u.tokens, c + u.cost_usd)
            unknown += u.calls if u.status == CallStatus.UNKNOWN else 0
        for (agent, step_id), (t, c) in token_sums.items():
            tokens.add_metric([agent, step_id], t)
            cost.add_metric([agent, step_id], c)
        unknown_calls = GaugeMetricFamily(
            "kodo_provider_calls_unknown",
            "Calls claimed but never recorded (outcome unknown: never repeated blindly)",
        )
        unknown_calls.add_metric([], unknown)
        hits = CounterMetricFamily(
            "kodo_cache_hits", "Step attempts answered from a recorded call", labels=["level"]
        )
        for level in ("l1", "l2"):
            hits.add_metric([level], sources.get(level, 0))
        misses = CounterMetricFamily(
            "kodo_cache_misses", "Step attempts that made a (paid) provider call"
        )
        misses.add_metric([], sources.get("miss", 0))
        spent = CounterMetricFamily(
            "kodo_budget_spent", "What settled provider calls spent", labels=["unit"]
        )
        spent.add_metric(["usd"], budgets.spent_usd)
        spent.add_metric(["tokens"], budgets.spent_tokens)
        reserved = GaugeMetricFamily(
            "kodo_budget_reserved",
            "Reserved on active runs' budgets by provider calls in flight",
            labels=["unit"],
        )
        reserved.add_metric(["usd"], budgets.reserved_usd)
        reserved.add_metric(["tokens"], budgets.reserved_tokens)
        stopped = GaugeMetricFamily(
            "kodo_runs_waiting_budget", "Runs whose next call would pass their budget"
        )
        stopped.add_metric([], budgets.waiting)
        return [
            runs,
            waiting,
            parked,
            spent,
            reserved,
            stopped,
            stuck_runs,
            _histogram(
                "kodo_step_duration_seconds",
                "Duration of finished steps",
                ["step_id"],
                steps,
                STEP_BUCKETS_S,
            ),
            _histogram(
                "kodo_provider_call_duration_seconds",
                "Duration of provider calls",
                ["agent", "step_id"],
                calls,
                CALL_BUCKETS_S,
            ),
            call_count,
            tokens,
            cost,
            unknown_calls,
            hits,
            misses,
            _histogram(
                "kodo_approval_dispatch_latency_seconds",
                "From a plan's approval to the dispatch of ApplyPatchST",
                [],
                dispatch,
                DISPATCH_BUCKETS_S,
            ),
        ]


def registry_of(sessions: sessionmaker[Session], clock: Clock) -> CollectorRegistry:
    """A registry of our collector only (the process-global one would mix in state
    of whatever else imported prometheus_client, and tests build many apps)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KodoCollector(sessions, clock))
    return registry


@routes.route("/metrics", "GET")
@routes.response(
    200, content_type=CONTENT_TYPE_LATEST, description="Prometheus text exposition format"
)
def metrics() -> Response:
    ctx = api()
    body = generate_latest(registry_of(ctx.sessions, ctx.clock))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
