"""``python -m bench --phases think --opencode real --daemons 2``: the think-time phase
against two real ``opencode serve`` daemons (each in its sandbox) driving the scripted
LLM, which holds the think time.

Issue 11 item 5: the closing note gives the daemon's CPU and RSS per prompt from this.
Timings and sizes are never asserted (the bench prints them); this specifies that the
phase runs end to end with calls spread over both daemons, kodo deleting each session
once its answer is recorded, and the per-daemon figures present. It needs the real
OpenCode (``kodo oc install``, as CI and the conformance suite have it): only its absence
skips, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from devstack.oc_daemon import install
from tests.conftest import ROOT, scratch_database_url

pytestmark = pytest.mark.conformance

RUNS = 12  # runs are spread by a hash of the run id: all 12 on one daemon has odds 1 in 2,048
DAEMON_FIGURES = (
    "cpu_ms",
    "cpu_ms_per_prompt",
    "rss_before_mb",
    "peak_rss_mb",
    "rss_after_mb",
    "rss_mb_per_held",
    "directories",
    "rss_mb_per_directory",
)
DAEMON_ROWS = (
    "  CPU per prompt",
    "  RSS per held prompt ((peak - before) / held)",
    "  sessions of recorded answers still on the daemon",
    "  memory mappings after the phase",
    "scripted LLM: model requests",
    "  answers held at once, peak",
)


@pytest.mark.timeout(540)  # the bench's own subprocess timeout (480 s) fires first
def test_the_think_phase_runs_against_two_real_daemons_and_prints_their_cost(
    database_url: str, tmp_path: Path
) -> None:
    if install.find_binary(install.cache_dir()) is None:
        pytest.skip(f"opencode {install.VERSION} is not installed: run `kodo oc install`")
    bench_db = make_url(scratch_database_url(database_url, "bench_real"))
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--phases", "think", "--opencode", "real"]
    argv += ["--daemons", "2", "--think-runs", str(RUNS), "--think-ms", "1000"]
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
    assert "the 2 opencode daemons and the scripted LLM over the phase" in done.stdout
    think = json.loads(out.read_text())["think"]
    assert think["provider"] == "real"
    assert think["failed"] == 0, think["failure_kinds"]
    assert think["succeeded"] == RUNS
    assert think["provider_calls"] == 3 * RUNS, "one call per step, none paid twice"
    assert think["prompts_on_unknown_daemons"] == []
    retried = think["release_retries"]
    assert think["runs_still_holding_worktrees"] == 0, f"each worktree let go: {retried}"
    assert retried["release_deferred"] == 0, "no turn kodo lost runs on in a resting worktree"
    assert think["released_within_s"] is not None
    daemons = think["daemons"]
    assert [d["daemon"] for d in daemons] == [0, 1]
    assert len({d["url"] for d in daemons}) == 2
    assert sum(d["prompts"] for d in daemons) == 3 * RUNS
    for d in daemons:
        assert d["prompts"] >= 1, f"daemon {d['url']} served no call: {daemons}"
        assert d["peak_held"] >= 1
        assert d["sessions_left"] == 0, "kodo deletes a session once its answer is recorded"
        for name in DAEMON_FIGURES:
            assert d[name] is not None, f"daemon {d['url']} has no {name}"
        assert d["cpu_ms"] > 0
        assert d["peak_rss_mb"] > 0
        assert 0 < d["maps"] < think["max_map_count"]
    llm = think["scripted_llm"]
    assert llm["held_peak"] >= 1, "the think time is held by the scripted LLM"
    assert llm["requests"] >= 3 * RUNS
    assert think["cpu_ms"]["scripted-llm"] > 0
    assert think["cpu_ms"]["opencode daemons"] > 0
    assert set(think["peak_rss_mb"]) == {"api", "worker", "beat", "collector"}
    shown = {r["metric"] for r in think["daemon_rows"]}
    assert set(DAEMON_ROWS) <= shown
    for row in DAEMON_ROWS:
        assert row in done.stdout, f"missing daemon row {row!r}"


@pytest.mark.timeout(300)
def test_the_churn_bench_feeds_a_real_daemon_worktrees_with_and_without_release() -> None:
    """``python -m bench.daemon_churn``: what a long-lived daemon goes through, one
    worktree after another, in both modes (sizes are printed, never asserted)."""
    if install.find_binary(install.cache_dir()) is None:
        pytest.skip(f"opencode {install.VERSION} is not installed: run `kodo oc install`")
    argv = [sys.executable, "-m", "bench.daemon_churn", "--worktrees", "3", "--every", "3"]
    done = subprocess.run(
        argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for mode in ("keep", "dispose"):
        assert f"{mode}: worktrees" in done.stdout
        assert f"  {mode}: 3 worktrees," in done.stdout
    assert done.stdout.count("  memory mappings, most seen") == 2
    assert done.stdout.count("  RSS growth per worktree") == 2
