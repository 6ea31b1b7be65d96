"""``--peers DIR``: the DBOS figures are read from the peers' JSON or refused, never guessed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers import Peer, PeerError, peer_rows
from bench.report import Row

DBOS = {
    "peer": "dbos",
    "latency_ms": {"submit_to_waiting": {"p50": 20.0}, "approve_to_done": {"p50": 10.0}},
    "throughput": {"n": 300, "runs_per_s": 25.0, "cpu_ms_per_run": {"total": 50.0}},
}
BASE = [
    Row("submit->waiting p50", 60.0),
    Row("  without git (like the reference's stub steps) p50", 20.0),
    Row("approve->done p50", 100.0),
    Row("  without git and verification (like the reference) p50", 20.0),
    Row("runs/s, 300 at once, 2 workers", 10.0, unit="runs/s"),
    Row("CPU per run, all processes", 200.0),
    Row("  of which kodo itself (API, workers, Postgres, Redis)", 100.0),
]


def test_each_comparable_row_gets_its_ratio_to_dbos_and_the_issues_targets(
    tmp_path: Path,
) -> None:
    (tmp_path / "dbos.json").write_text(json.dumps(DBOS))
    rows = {r.metric: r for r in peer_rows(BASE, Peer.load(tmp_path))}
    assert rows["submit->waiting p50"].ratio == 3.0
    assert rows["  without git p50"].ratio == 1.0
    assert rows["  without git p50"].met is True  # <= 1.0x
    assert rows["  without git and verification p50"].ratio == 2.0
    assert rows["  without git and verification p50"].met is False  # <= 1.5x
    assert rows["runs/s, 300 at once, 2 workers (DBOS: 300 at once)"].ratio == 0.4
    assert rows["CPU per run, kodo itself vs DBOS all-in"].ratio == 2.0
    assert rows["CPU per run, kodo itself vs DBOS all-in"].met is False  # <= 40 ms


def test_a_folder_without_a_dbos_result_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PeerError, match=r"dbos\.json"):
        Peer.load(tmp_path)


def test_a_result_missing_a_figure_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dbos.json").write_text(json.dumps({**DBOS, "throughput": {"n": 300}}))
    with pytest.raises(PeerError, match="not a peer result"):
        Peer.load(tmp_path)
