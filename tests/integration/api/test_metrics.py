"""``/metrics``: Prometheus text computed from the tables at scrape time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import MetricsRollup, Run, StepRun
from tests.factories import OpenCodeCallFactory, PlanApprovalFactory, RunFactory

from .conftest import NOW

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def step_run(db: Session, run: Run, step_id: str, duration_ms: int, caches: list[str]) -> None:
    attempts: list[dict[str, Any]] = [
        {"attempt": i + 1, "status": "succeeded", "cache": c} for i, c in enumerate(caches)
    ]
    db.add(
        StepRun(
            run_id=run.id,
            step_id=step_id,
            status="succeeded",
            started_at=NOW,
            finished_at=NOW + timedelta(milliseconds=duration_ms),
            duration_ms=duration_ms,
            output={"attempts": attempts},
        )
    )
    db.flush()


def test_an_empty_database_reports_zeros_and_that_it_answered(client: FlaskClient) -> None:
    samples = scrape(client)

    assert value(samples, "kodo_metrics_database_up") == 1
    assert value(samples, "kodo_runs", status="waiting_input") == 0
    assert value(samples, "kodo_approvals_waiting") == 0
    assert value(samples, "kodo_provider_calls_unknown") == 0
    assert value(samples, "kodo_runs", status="waiting_upgrade") == 0
    assert value(samples, "kodo_runs_waiting_upgrade") == 0


def test_runs_parked_for_an_upgrade_are_counted_and_not_called_stuck(
    client: FlaskClient, db: Session
) -> None:
    RunFactory(waiting_upgrade=True, updated_at=NOW - timedelta(hours=1))
    db.commit()

    samples = scrape(client)

    assert value(samples, "kodo_runs", status="waiting_upgrade") == 1
    assert value(samples, "kodo_runs_waiting_upgrade") == 1
    assert ("kodo_runs_stuck", (("status", "waiting_upgrade"),)) not in samples


def test_metrics_are_derived_from_the_rows(client: FlaskClient, db: Session) -> None:
    RunFactory(waiting_input=True)
    RunFactory(waiting_input=True)
    RunFactory(succeeded=True)
    RunFactory(updated_at=NOW - timedelta(hours=1))  # compiling, untouched for an hour
    RunFactory(updated_at=NOW - timedelta(minutes=1))  # compiling, recently moved
    done = RunFactory(succeeded=True)
    step_run(db, done, "CompileST", 1500, ["miss", "l2"])
    step_run(db, done, "DecideST", 300, ["l1"])
    OpenCodeCallFactory(run=done, duration_ms=2000, usage={"total_tokens": 100, "cost_usd": 0.25})
    OpenCodeCallFactory(
        run=done, attempt=2, duration_ms=400, usage={"total_tokens": 20, "cost_usd": 0.05}
    )
    OpenCodeCallFactory(run=done, status="unknown", agent="build", step_id="ApplyPatchST")
    late = {"status": "succeeded_late", "agent": "build", "step_id": "ApplyPatchST"}
    OpenCodeCallFactory(run=done, **late, attempt=2, usage={"total_tokens": 7, "cost_usd": 0.5})
    PlanApprovalFactory(approved_at=NOW, decided_at=NOW, dispatched_at=NOW + timedelta(seconds=3))
    db.commit()

    samples = scrape(client)

    assert value(samples, "kodo_runs", status="waiting_input") == 3  # + the approval's run
    assert value(samples, "kodo_runs", status="succeeded") == 2
    assert value(samples, "kodo_runs", status="compiling") == 2
    assert value(samples, "kodo_approvals_waiting") == 3
    assert value(samples, "kodo_runs_stuck", status="compiling") == 1

    compile_ = {"step_id": "CompileST"}
    assert value(samples, "kodo_step_duration_seconds_count", **compile_) == 1
    assert value(samples, "kodo_step_duration_seconds_sum", **compile_) == pytest.approx(1.5)
    assert value(samples, "kodo_step_duration_seconds_bucket", **compile_, le="1.0") == 0
    assert value(samples, "kodo_step_duration_seconds_bucket", **compile_, le="2.5") == 1

    plan = {"agent": "plan", "step_id": "CompileST"}
    assert value(samples, "kodo_provider_call_duration_seconds_count", **plan) == 2
    assert value(samples, "kodo_provider_call_duration_seconds_sum", **plan) == pytest.approx(2.4)
    assert value(samples, "kodo_provider_call_duration_seconds_bucket", **plan, le="0.5") == 1
    assert value(samples, "kodo_provider_tokens_total", **plan) == 120
    assert value(samples, "kodo_provider_cost_usd_total", **plan) == pytest.approx(0.30)
    assert value(samples, "kodo_provider_calls_total", **plan, status="succeeded") == 2
    assert value(samples, "kodo_provider_calls_unknown") == 1, "a late answer is known"
    assert value(samples, "kodo_provider_calls_total", **late) == 1
    build = {"agent": "build", "step_id": "ApplyPatchST"}
    assert value(samples, "kodo_provider_cost_usd_total", **build) == pytest.approx(0.5)

    assert value(samples, "kodo_cache_hits_total", level="l1") == 1
    assert value(samples, "kodo_cache_hits_total", level="l2") == 1
    assert value(samples, "kodo_cache_misses_total") == 1

    assert value(samples, "kodo_approval_dispatch_latency_seconds_count") == 1
    assert value(samples, "kodo_approval_dispatch_latency_seconds_sum") == pytest.approx(3.0)
    assert value(samples, "kodo_approval_dispatch_latency_seconds_bucket", le="2.0") == 0
    assert value(samples, "kodo_approval_dispatch_latency_seconds_bucket", le="5.0") == 1


def test_budgets_show_what_was_spent_what_is_reserved_and_who_waits_for_more(
    client: FlaskClient, db: Session
) -> None:
    RunFactory(spent_usd_micro=1_500_000, spent_tokens=30, reserved_usd_micro=3_000_000)
    RunFactory(
        status="waiting_input",
        next_action="await:budget",
        spent_usd_micro=500_000,
        reserved_tokens=200,
    )
    RunFactory(succeeded=True, spent_usd_micro=1_000_000, reserved_usd_micro=9_000_000)
    db.commit()

    samples = scrape(client)

    assert value(samples, "kodo_budget_spent_total", unit="usd") == 3.0, "every run's spend"
    assert value(samples, "kodo_budget_spent_total", unit="tokens") == 30
    assert value(samples, "kodo_budget_reserved", unit="usd") == 3.0, "active runs only"
    assert value(samples, "kodo_budget_reserved", unit="tokens") == 200
    assert value(samples, "kodo_runs_waiting_budget") == 1


def test_a_second_scrape_reads_the_folded_history_and_reports_the_same(
    client: FlaskClient, db: Session
) -> None:
    """The step finished months ago (NOW) is folded into the rollup by the first scrape;
    the second reads it from there and reports every sample as the first did."""
    done = RunFactory(succeeded=True, spent_usd_micro=250_000)
    step_run(db, done, "CompileST", 1500, ["miss", "l2"])
    OpenCodeCallFactory(run=done, duration_ms=2000, usage={"total_tokens": 100, "cost_usd": 0.25})
    db.commit()

    first = scrape(client)
    folded = db.execute(
        select(MetricsRollup.labels, MetricsRollup.counts).where(
            MetricsRollup.family == "step_duration"
        )
    ).all()
    second = scrape(client)

    assert [(labels, counts[-1]) for labels, counts in folded] == [(["CompileST"], 1)]
    assert second == first
    assert value(second, "kodo_step_duration_seconds_count", step_id="CompileST") == 1
    assert value(second, "kodo_step_duration_seconds_sum", step_id="CompileST") == 1.5
    assert value(second, "kodo_cache_hits_total", level="l2") == 1
    assert value(second, "kodo_cache_misses_total") == 1
    assert value(second, "kodo_budget_spent_total", unit="usd") == 0.25
