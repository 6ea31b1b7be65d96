"""The floor row: today's hop counts per run, each times the cheapest hop of its kind."""

from __future__ import annotations

import pytest

from bench.floor import FLOOR_ROW, floor_rows

UNITS = {"pg_transaction_ms": 0.5, "api_request_ms": 2.0, "provider_request_ms": 0.25}


def rows(
    units: dict[str, float] | None = UNITS,
    api_requests: float | None = 4.0,
    deliveries: float | None = 7.0,
    delivery_ms: float | None = 3.0,
) -> dict[str, float | None]:
    made = floor_rows(
        units,
        api_requests=api_requests,
        deliveries=deliveries,
        delivery_ms=delivery_ms,
        transactions=28.0,
        provider_requests=16.0,
        limit_ms=40.0,
    )
    return {r.metric: r.ours for r in made}


def test_the_floor_is_the_sum_of_each_kinds_count_times_its_unit_cost() -> None:
    got = rows()
    assert got[FLOOR_ROW] == pytest.approx(7 * 3.0 + 28 * 0.5 + 4 * 2.0 + 16 * 0.25)
    parts = [value for metric, value in got.items() if metric != FLOOR_ROW]
    assert parts == pytest.approx([21.0, 14.0, 8.0, 4.0])


def test_each_part_names_its_count_and_unit() -> None:
    labels = [metric.strip() for metric in rows() if metric != FLOOR_ROW]
    assert labels == [
        "Celery: 7.00 deliveries x 3.00 ms (a bare one)",
        "Postgres: 28.0 transactions x 0.50 ms (one UPDATE and COMMIT)",
        "API: 4.0 requests x 2.00 ms (GET /runs/{id}/plan)",
        "provider HTTP: 16 requests x 0.25 ms (the client's side)",
    ]


@pytest.mark.parametrize(("limit", "met"), [(60.0, True), (40.0, False)])
def test_the_floor_of_47_ms_is_judged_against_the_limit(limit: float, met: bool) -> None:
    made = floor_rows(
        UNITS,
        api_requests=4.0,
        deliveries=7.0,
        delivery_ms=3.0,
        transactions=28.0,
        provider_requests=16.0,
        limit_ms=limit,
    )
    (floor,) = [r for r in made if r.metric == FLOOR_ROW]
    assert (floor.met, floor.target) == (met, f"<= {limit:g}")


def test_without_a_count_or_a_unit_there_is_no_floor_rather_than_a_guess() -> None:
    assert rows(units=None) == {}
    assert rows(api_requests=None) == {}
    assert rows(deliveries=None) == {}
    assert rows(delivery_ms=None) == {}
