"""The benchmark command keeps working: a small run prints every row and writes JSON.

Timings are never asserted here (they live in the benchmark's table); this only
specifies that ``python -m bench`` runs end to end and reports what the issue asks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

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
    "Redis commands per run",
)


def test_a_small_benchmark_prints_its_table_and_writes_json(
    database_url: str, tmp_path: Path
) -> None:
    bench_db = make_url(scratch_database_url(database_url, "bench"))
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--runs", "4", "--latency-runs", "2"]
    argv += ["--beat-runs", "1", "--approval-poll", "0.5", "--deadline", "90"]
    argv += ["--database-url", bench_db.render_as_string(hide_password=False), "--json", str(out)]

    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=240
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
    body = json.loads(out.read_text())
    figures = {r["metric"]: r for r in body["rows"]}
    assert set(ROWS) <= set(figures)
    assert figures["submit->waiting p50"]["kodo"] > 0
    assert figures["submit->waiting p50"]["baseline"] > 0
    assert figures["SQL statements per run (workers)"]["kodo"] > 0
    assert [k["completed"] for k in body["kodo"]] == [4], "every run in flight finished"
