"""Doctor's triage judges are pure: what a check says about the counts it was given."""

from __future__ import annotations

from services.cli.doctor import (
    BEAT_STALE_S,
    STATS_MIN_ROWS,
    judge_beat,
    judge_held_worktrees,
    judge_statistics,
    judge_stuck,
    judge_unknown_calls,
    judge_waiting_upgrade,
)
from shared.db.repos.triage import UnanalyzedTable


def test_stuck_sets_approvals_and_parked_runs_aside_and_leaves_its_input_alone() -> None:
    found = {"compiling": 2, "waiting_input": 1, "waiting_upgrade": 3}
    check = judge_stuck(found, 30)
    assert (check.ok, check.data["by_status"], check.data["waiting_input"]) == (
        False,
        {"compiling": 2},
        1,
    )
    assert (
        check.detail
        == "not updated for > 30 min: compiling: 2 (1 waiting for approval, not counted)"
    )
    assert found == {"compiling": 2, "waiting_input": 1, "waiting_upgrade": 3}
    assert judge_stuck({"waiting_input": 1}, 30).ok


def test_unknown_calls_are_red_and_name_at_most_five_runs() -> None:
    assert judge_unknown_calls({}).ok
    check = judge_unknown_calls({f"r{i}": 1 for i in range(7)})
    assert not check.ok
    assert check.detail.startswith(
        "7 call(s) with unknown outcome in 7 run(s): r0, r1, r2, r3, r4 ..."
    )


def test_waiting_upgrade_is_a_warning_only_when_this_contract_resumes_them_all() -> None:
    assert judge_waiting_upgrade({}, "mine").detail == "none"
    assert judge_waiting_upgrade({"mine": 2}, "mine").detail.startswith("WARNING: 2 run(s)")
    check = judge_waiting_upgrade({"mine": 1, "old": 1}, "mine")
    assert not check.ok
    assert check.detail.endswith("(rule step_contract)")


def test_beat_is_red_when_it_never_ticked_or_its_last_tick_is_stale() -> None:
    never = judge_beat(None)
    assert not never.ok
    assert "never ticked" in never.detail
    stale = judge_beat(BEAT_STALE_S + 1)
    assert not stale.ok
    assert "beat is down or stuck" in stale.detail
    fresh = judge_beat(2.04)
    assert fresh.ok
    assert fresh.detail == "last tick 2.0s ago"
    assert fresh.data == {"age_s": 2.0, "stale_after_s": BEAT_STALE_S}


def test_held_worktrees_are_red_only_when_a_daemon_did_not_answer_a_release() -> None:
    calm = judge_held_worktrees({"moving": 3, "resting": 2, "release_failed": 0})
    assert calm.ok
    assert calm.detail.startswith("3 run(s) moving, 2 resting")
    failed = judge_held_worktrees({"moving": 0, "resting": 4, "release_failed": 1})
    assert not failed.ok
    assert failed.detail.startswith("1 release(s) a daemon did not answer")


def test_statistics_warn_only_for_tables_autovacuum_does_not_analyze() -> None:
    calls = UnanalyzedTable("app.opencode_calls", 120_000, auto=False)
    runs = UnanalyzedTable("app.runs", 40_000, auto=True)

    quiet = judge_statistics([runs])
    assert (quiet.ok, quiet.detail) == (
        True,
        "current, or autovacuum keeps them (1 table(s) await autovacuum's analyze)",
    )
    assert judge_statistics([]).detail == "current, or autovacuum keeps them"

    warned = judge_statistics([calls, runs])
    assert warned.ok, "a warning, not a failure: nothing is broken, plans may grow slow"
    assert warned.detail.startswith("WARNING: app.opencode_calls (120000 rows) never analyzed")
    assert "`ANALYZE app.opencode_calls`" in warned.detail
    assert "app.runs" not in warned.detail
    assert warned.data == {
        "tables": {"app.opencode_calls": 120_000, "app.runs": 40_000},
        "min_rows": STATS_MIN_ROWS,
    }


def test_statistics_name_five_tables_and_count_the_rest_but_analyze_them_all() -> None:
    tables = [UnanalyzedTable(f"app.t{i}", 5000 - i, auto=False) for i in range(7)]
    detail = judge_statistics(tables).detail
    assert "app.t4 (4996 rows) and 2 more never analyzed" in detail
    assert "app.t5 (" not in detail
    assert "`ANALYZE app.t0, app.t1, app.t2, app.t3, app.t4, app.t5, app.t6`" in detail
