"""``--opencode real``: refused before anything starts when it cannot be honoured, and
the figures it derives (prompts held at once, the phase's ideal) counted right."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.__main__ import main
from bench.phases import work_cpu
from bench.real_daemons import DAEMON_ROLE, most_at_once, release_retries
from bench.think import think_rows
from devstack.oc_daemon.install import CACHE_ENV


def test_a_missing_opencode_stops_the_bench_saying_how_to_install_it(tmp_path: Path) -> None:
    argv = ["--phases", "think", "--opencode", "real", "--database-url", "postgresql://x/y"]
    result = CliRunner().invoke(main, argv, env={CACHE_ENV: str(tmp_path / "none")})
    assert result.exit_code == 1
    assert "is not installed" in result.output
    assert "kodo oc install" in result.output


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--opencode", "real"], "--phases think"),
        (["--phases", "think", "--daemons", "2"], "--daemons is for --opencode real"),
    ],
)
def test_real_daemons_are_for_the_think_phase_only(argv: list[str], said: str) -> None:
    result = CliRunner().invoke(main, [*argv, "--database-url", "postgresql://x/y"])
    assert result.exit_code == 2
    assert said in result.output


def test_prompts_held_at_once_count_overlapping_spans_only() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    spans = [(at(0), at(10)), (at(1), at(5)), (at(5), at(6)), (at(20), at(21))]
    assert most_at_once(spans) == 2  # one ends as another begins: not three at once
    assert most_at_once([]) == 0


def _think_figures(provider: str, cpu_ms: dict[str, float]) -> dict[str, Any]:
    return {
        "runs": 10,
        "think_ms": 1000,
        "cores": 2,
        "wall_s": 20.0,
        "submitted_within_s": 1.0,
        "work_cpu_ms": 2000.0,  # git, verification, the stub provider: 1 s on 2 cores
        "cpu_ms": cpu_ms,
        "peak_rss_mb": {"api": 100.0},
        "peak_rss_reset": True,
        "submit_limit": 0,
        "peak_in_flight": 10,
        "provider_calls": 30,
        "failed": 0,
        "not_submitted": 0,
        "retried": {},  # requests sent again after a 503 or 429 (none here)
        "submit_to_waiting_p50_ms": 1000.0,
        "approve_to_done_p50_ms": 2000.0,
        "provider": provider,
    }


def test_real_daemons_cpu_bounds_the_ideal_on_its_own_never_adds_to_the_think_time() -> None:
    """A daemon's CPU is spent inside the held calls: the ideal is 3T plus the work
    between calls, or all work CPU over the cores when that is more (here 1 + 10 s)."""
    work = {"kodo_worker subprocesses": 1900.0, "scripted-llm": 100.0, "api": 500.0}
    real = {
        r.metric: r.ours for r in think_rows(_think_figures("real", {**work, DAEMON_ROLE: 20000.0}))
    }
    assert real["ideal: 3T + CPU floor, or all work CPU (daemons too) / cores if more"] == 11.0
    assert real["  of which kodo itself (API, workers, Postgres, Redis)"] == 50.0  # 500 / 10
    compat = {r.metric: r.ours for r in think_rows(_think_figures("compat", work))}
    assert compat["ideal: 3T + CPU floor (run's own work CPU / 2 cores)"] == 4.0


def test_the_apis_git_processes_are_the_runs_work_not_kodos_own_cpu() -> None:
    """The git processes with which the API pins a submitted repository are counted
    with the workers' git and tests and the stub provider: outside "kodo itself"."""
    cpu = {"kodo_worker subprocesses": 1900.0, "api subprocesses": 300.0, "oc-compat": 100.0}
    assert work_cpu({**cpu, "api": 500.0, "kodo_worker": 700.0, "postgres": 200.0}) == 2300.0


def test_releases_put_off_are_counted_from_every_log_by_their_event(tmp_path: Path) -> None:
    failed = {"event": "instances.release_failed", "error": "timed out", "run_id": "r1"}
    deferred = {"event": "instances.release_deferred", "busy_sessions": ["ses_1"]}
    other = {"event": "instances.released", "runs": 3}
    (tmp_path / "kodo_worker-0.log").write_text(
        "\n".join(json.dumps(e) for e in (failed, other, failed))
        + '\n{"event": "instances.release_failed" cut short\n'
    )
    (tmp_path / "kodo_worker-1.log").write_text(json.dumps(deferred) + "\n")
    (tmp_path / "api.log").write_text("an instances.release_failed said in plain text\n")

    assert release_retries(tmp_path) == {"release_failed": 2, "release_deferred": 1}
