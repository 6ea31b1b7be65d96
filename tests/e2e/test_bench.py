"""The benchmark command keeps working: a small run prints every row and writes JSON.

Timings are never asserted here (they live in the benchmark's table); this only
specifies that ``python -m bench`` runs end to end and reports what the issue asks for:
every phase (base, think time, SSE watchers) run small, and the ratio to a DBOS result
file (one written here in the peers' format: its figures are not measured).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from bench.phases import cmdline
from bench.stats import descendants
from tests.conftest import ROOT, scratch_database_url

pytestmark = pytest.mark.e2e

ROWS = (
    "submit->waiting p50",
    "approve->done p50",
    "approve->applying (nudge, SSE) p50",
    "approve->applying (beat only) p50",
    "runs/s, 4 at once, 2 workers",
    "provider-call overhead (claim+record)",
    "cache hit L1 p50",
    "cache hit L2 (ledger) p50",
    "worker peak RSS, largest process (2 workers)",
    "SQL statements per run (workers)",
    "  one-statement reads outside a transaction (autocommit)",
    "  CPU per run, Celery workers (bare: 4 stub tasks)",
    "  CPU per task delivery, bare Celery",
    "Redis commands per run",
    "CPU per run, the whole machine (the bench's driver excluded)",
    "  floor at today's hop counts: each x the cheapest of its kind",
)
SPAWNED = "a sandbox counts once, named by what it runs"
THINK_RUNS = 20
THINK_ROWS = (
    "wall, first submit to last terminal (20 runs x 3 x 1 s)",
    "ideal: 3T + CPU floor (run's own work CPU / 2 cores)",
    "efficiency (ideal / wall)",
    "the machine's CPU over the phase / 2 cores (no schedule ends sooner)",
    "  seconds of the phase the cores were >= 90% busy (the driver too)",
    "CPU per accepted run, the whole machine (the bench's driver excluded)",
    "  Postgres backends opened and ended per accepted run (their CPU is uncounted)",
    "peak provider calls in flight (oc-compat)",
    "failed runs (not succeeded)",
    "requests sent again after 503/429 + Retry-After (all kinds)",
    "peak RSS over the phase, api",
    "peak RSS over the phase, worker",
    "peak RSS over the phase, beat",
    "peak RSS over the phase, collector",
    "peak RSS over the phase, oc-compat",
    "peak RSS, kodo processes together (oc-compat excluded)",
)
WATCHERS = 50
SSE_ROWS = (
    "watchers open (first event received), of 50",
    "  still open after the timed requests",
    "/healthz p50, 50 watchers",
    "/healthz p99, 50 watchers",
    "GET /runs/{id} p50, 50 watchers",
    "GET /runs/{id} p99, 50 watchers",
)
PEER_ROWS = (
    "submit->waiting p50",
    "  without git p50",
    "approve->done p50",
    "  without git and verification p50",
    "runs/s, 4 at once, 2 workers (DBOS: 300 at once)",
    "CPU per run, kodo itself vs DBOS all-in",
    "  floor at today's hop counts (each at its cheapest)",
)
DBOS_RESULT = {  # the shape ../shared/peers/dbos_peer.py writes; figures from issue 11
    "peer": "dbos",
    "latency_ms": {"submit_to_waiting": {"p50": 16.7}, "approve_to_done": {"p50": 16.7}},
    "throughput": {"n": 300, "done": 300, "runs_per_s": 27.8, "cpu_ms_per_run": {"total": 46.0}},
    "peak_rss_mb": {"driver_and_workers": 133.0},
}


@pytest.mark.timeout(540)  # the bench's own subprocess timeout (480 s) fires first
def test_a_small_benchmark_prints_its_table_and_writes_json(
    database_url: str, tmp_path: Path
) -> None:
    bench_db = make_url(scratch_database_url(database_url, "bench"))
    out = tmp_path / "bench.json"
    peers = tmp_path / "peers"
    peers.mkdir()
    (peers / "dbos.json").write_text(json.dumps(DBOS_RESULT))
    argv = [sys.executable, "-m", "bench", "--runs", "4", "--latency-runs", "2"]
    argv += ["--think-runs", str(THINK_RUNS), "--think-ms", "1000", "--watchers", str(WATCHERS)]
    argv += ["--peers", str(peers)]
    argv += ["--beat-runs", "1", "--approval-poll", "0.5", "--deadline", "90"]
    argv += ["--database-url", bench_db.render_as_string(hide_password=False), "--json", str(out)]

    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=480
        )
    finally:  # the bench recreates its database and leaves it: this session's goes too
        admin = create_engine(bench_db.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{bench_db.database}" WITH (FORCE)'))
        admin.dispose()

    assert done.returncode == 0, done.stdout + done.stderr
    for row in ROWS:
        assert row in done.stdout, f"missing row {row!r}"
    assert "did not succeed" not in done.stdout
    ran = re.search(r"^bench: verification commands run (\S+)$", done.stdout, re.MULTILINE)
    assert ran is not None, done.stdout[:400]
    assert os.access(ran.group(1), os.X_OK)
    body = json.loads(out.read_text())
    figures = {r["metric"]: r for r in body["rows"]}
    assert set(ROWS) <= set(figures)
    assert figures["submit->waiting p50"]["kodo"] > 0
    assert figures["submit->waiting p50"]["baseline"] > 0
    assert figures["SQL statements per run (workers)"]["kodo"] > 0
    started = {
        m: f["kodo"]
        for m, f in figures.items()
        if m.startswith(("  workers: git ", "  workers: bwrap "))
    }
    assert any(m.startswith("  workers: bwrap git ") for m in started), "pinned gits are counted"
    assert any(m.startswith("  API: git ") for m in figures), "the submit's git is counted"
    assert figures[f"processes started per run (workers; {SPAWNED})"]["kodo"] >= sum(
        started.values()
    )
    assert not [m for m in figures if m.endswith(": bwrap ?")], "every sandbox is read"
    assert figures["  CPU per run, Celery workers (bare: 4 stub tasks)"]["baseline"] > 0
    assert [k["completed"] for k in body["kodo"]] == [4], "every run in flight finished"
    first = body["kodo"][0]
    assert first["api_requests_per_run"] >= 4, "submit, events, plan card, approve"
    assert all(ms > 0 for ms in first["unit_costs"].values()), first["unit_costs"]

    peer_rows = {r["metric"]: r for r in body["peers"]["rows"]}
    assert set(PEER_ROWS) <= set(peer_rows)
    for metric in PEER_ROWS:
        assert peer_rows[metric]["ratio"] is not None, f"no kodo/DBOS ratio for {metric!r}"

    think = body["think"]
    assert {r["metric"] for r in think["rows"]} >= set(THINK_ROWS)
    for row in THINK_ROWS:
        assert row in done.stdout, f"missing think-time row {row!r}"
    assert think["failed"] == 0, think["failures"]
    assert think["succeeded"] == THINK_RUNS
    assert all(count > 0 for count in think["retried"].values()), think["retried"]
    assert think["provider_calls"] == 3 * THINK_RUNS, "one held call per step, none paid twice"
    assert think["peak_in_flight"] >= 1
    assert think["wall_s"] > 0
    # The machine spent at least what the runs' processes show (they ran on it).
    assert think["machine_cpu_ms"] > 0.5 * sum(think["cpu_ms"].values())
    assert 0 <= think["busy_seconds_share"] <= 1, "the phase lasts seconds: they were sampled"
    # pools sized to the worker's threads: no connection opened and closed per step
    assert think["postgres_backends_ended"] < THINK_RUNS / 2, think["postgres_backends_ended"]
    assert set(think["peak_rss_mb"]) == {"api", "worker", "beat", "collector", "oc-compat"}
    assert all(mb > 0 for mb in think["peak_rss_mb"].values())

    sse = body["sse"]
    for row in SSE_ROWS:
        assert row in done.stdout, f"missing SSE row {row!r}"
    assert sse["opened"] == WATCHERS, sse["errors"]
    assert sse["still_open"] == WATCHERS, "a watcher of a waiting run was closed"
    assert sse["error_count"] == 0
    assert sse["shape"]["default_holds"] is True
    assert all(ms is not None for ms in sse["loaded"].values())


def _started(pid: int) -> str | None:
    """The process's start time (a pid reused meanwhile is another process), or None
    once it has ended (a zombie has ended: only its parent has yet to read its status)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _workers_under(pid: int) -> bool:
    return any(b"kodo_worker:app" in cmdline(p) for p in descendants(pid))


@pytest.mark.timeout(240)
def test_a_sigterm_stops_the_bench_and_every_process_it_started(
    database_url: str, tmp_path: Path
) -> None:
    """Its stack runs in sessions of its own: a bench killed by a CI or ``timeout`` limit
    left a Redis, workers, the API and the collector running."""
    bench_db = make_url(scratch_database_url(database_url, "bench_sigterm"))
    argv = [sys.executable, "-m", "bench", "--phases", "base", "--runs", "4"]
    argv += ["--latency-runs", "2", "--beat-runs", "1", "--json", str(tmp_path / "b.json")]
    argv += ["--database-url", bench_db.render_as_string(hide_password=False)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    started: dict[int, str | None] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # kodo's own services start before its workers do
            seen.append(line)
            if line.startswith("kodo, 2 workers"):
                break
        assert [x for x in seen if x.startswith("kodo, 2 workers")], "".join(seen)
        until = time.monotonic() + 60
        while not _workers_under(proc.pid) and time.monotonic() < until:
            time.sleep(0.2)
        assert _workers_under(proc.pid), "the kodo workers started"
        started = {pid: _started(pid) for pid in descendants(proc.pid) if pid != proc.pid}
        assert len(started) >= 6, "Redis, oc-compat, API, beat, collector, workers"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = [pid for pid, at in started.items() if at is not None and _started(pid) == at]
        for pid in left:  # a failure here must not leave them to the rest of the suite
            os.kill(pid, signal.SIGKILL)
        admin = create_engine(bench_db.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{bench_db.database}" WITH (FORCE)'))
        admin.dispose()

    assert left == [], f"still running after the bench ended: {left}"
    assert proc.returncode == 128 + signal.SIGTERM, "".join(seen) + rest
