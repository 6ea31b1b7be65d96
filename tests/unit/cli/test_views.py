"""How the CLI draws a run's header line."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from services.cli.views import (
    budget_line,
    calls_table,
    calls_total,
    revisions_view,
    run_header,
    run_view,
    step_states,
)
from tests.api_process.hostile import BIDI_CONTROLS, HOSTILE_PLAN, RLO, TRUE_PATH


def test_the_run_header_shows_how_often_kodo_retried() -> None:
    run = {
        "runId": "r1",
        "status": "waiting_input",
        "lastStep": "CompileST",
        "nextAction": "await:approval",
        "retryCount": 1,
    }

    assert run_header(run) == (
        "run r1  status=waiting_input  lastStep=CompileST  next=await:approval  retries=1"
    )


def test_a_run_header_without_a_retry_count_says_so_with_a_dash() -> None:
    assert run_header({"runId": "r1"}).endswith("retries=-")


def test_a_parked_run_shows_its_step_waiting_for_an_upgrade_not_running() -> None:
    run = {
        "status": "waiting_upgrade",
        "lastStep": "CompileST",
        "steps": [{"stepId": "CompileST", "status": "running", "deliveries": 1}],
    }
    assert step_states(run)[0] == (
        "CompileST",
        "waiting",
        "parked: waiting for a worker of the run's step contract",
    )


def test_a_run_stopped_past_the_approval_says_what_it_waits_for_at_its_step() -> None:
    run = {
        "status": "waiting_input",
        "nextAction": "await:budget",
        "lastStep": "DecideST",
        "steps": [
            {"stepId": "CompileST", "status": "succeeded", "round": 2, "durationMs": 70},
            {"stepId": "ApplyPatchST", "status": "succeeded", "round": 1, "durationMs": 90},
            {"stepId": "DecideST", "status": "failed", "round": 1, "error": "budget: ..."},
        ],
    }
    states = step_states(run)
    assert states[0] == ("CompileST", "succeeded", "70 ms (round 2)")
    assert states[1] == ("approval", "succeeded", "approved"), "not waiting for a decision"
    assert states[3] == ("DecideST", "waiting", "waiting for a larger budget (kodo run budget)")
    asking = {**run, "nextAction": "await:answer"}
    assert step_states(asking)[3][2] == "waiting for the approver's answer (kodo run answer)"


def test_the_budget_line_reads_spent_reserved_and_what_is_left() -> None:
    budget = {
        "usd": {"limit": 3.01, "spent": 0.0104, "reserved": 0.0, "remaining": 2.9996},
        "tokens": {"limit": None, "spent": 11158, "reserved": 0, "remaining": None},
    }
    assert budget_line(budget) == (
        "budget: $0.0104 spent + $0.0000 reserved of $3.0100 ($2.9996 left);"
        " 11158 tokens spent + 0 tokens reserved (no tokens budget)"
    )


def test_hostile_revisions_and_questions_print_with_their_controls_escaped() -> None:
    listed = {
        "runId": "r",
        "status": "waiting_input",
        "maxRevisions": 5,
        "currentPlanSha256": "b",
        "revisions": [
            {"revision": 1, "planSha256": "a", "plan": {"files": []}, "decision": None},
            {"revision": 2, "planSha256": "b", "plan": HOSTILE_PLAN, "decision": None},
        ],
    }
    console = Console(record=True, width=200, color_system=None)
    console.print(revisions_view(listed))
    shown = console.export_text()
    assert f"create\\u202e {TRUE_PATH}" in shown
    assert "\x1b" not in shown
    assert "\r" not in shown
    assert not BIDI_CONTROLS & set(shown)

    run = {"runId": "r", "status": "waiting_input", "question": f"ok?\r\x1b[2K{RLO}yes\nno"}
    console = Console(record=True, width=200, color_system=None)
    console.print(run_view(run))
    said = console.export_text()
    assert "question: ok?\\r\\x1b[2K\\u202eyes" in said
    assert "question: no" in said, "each line of a question is labelled: none poses as output"


def test_the_calls_table_has_no_error_column_when_no_call_failed() -> None:
    calls = [{"stepId": "CompileST", "status": "succeeded", "spentTokens": 7, "spentUsd": 0.0}]
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(calls_table(calls, {}))

    assert "error" not in captured.get()
    assert calls_total(calls) == "1 call(s) (0 failed), 7 tokens, $0.0000"


def test_the_step_whose_turn_it_is_shows_running_before_its_row_is_read() -> None:
    """While DecideST ran, watch showed it pending: the run's event came before its row."""
    run = {
        "status": "deciding",
        "updatedAt": "2026-11-30T12:00:00+00:00",
        "steps": [
            {"stepId": "CompileST", "status": "succeeded", "durationMs": 10},
            {"stepId": "ApplyPatchST", "status": "succeeded", "durationMs": 20},
        ],
    }
    now = datetime(2026, 11, 30, 12, 0, 4, tzinfo=UTC)

    states = dict((step, (state, detail)) for step, state, detail in step_states(run, now))

    assert states["DecideST"] == ("running", "4.0 s so far")
    assert states["ExecuteST"] == ("pending", "")
    assert step_states(run)[3] == ("DecideST", "running", ""), "no clock, no elapsed time"


def test_a_running_step_counts_its_time_from_its_own_start() -> None:
    run = {
        "status": "executing",
        "updatedAt": "2026-11-30T12:00:00+00:00",
        "steps": [
            {"stepId": "ExecuteST", "status": "running", "startedAt": "2026-11-30T12:00:01+00:00"}
        ],
    }
    now = datetime(2026, 11, 30, 12, 0, 3, 500000, tzinfo=UTC)

    assert step_states(run, now)[-1] == ("ExecuteST", "running", "2.5 s so far")


def test_a_call_cut_short_shows_what_it_spent_beside_what_the_daemon_counted() -> None:
    """A timed-out turn spends its reservation: the table says so in a column of its own,
    and the total is what the run's budget counts."""
    calls = [
        {
            "stepId": "CompileST",
            "status": "succeeded",
            "usage": {"totalTokens": 7},
            "spentTokens": 7,
            "spentUsd": 0.0,
        },
        {
            "stepId": "DecideST",
            "status": "timed_out",
            "usage": {"totalTokens": 40, "costUsd": 0.0},
            "spentTokens": 1000,
            "spentUsd": 0.25,
        },
    ]
    console = Console(width=200, color_system=None)
    with console.capture() as captured:
        console.print(calls_table(calls, {}))
    lines = captured.get().splitlines()
    assert "spent" in lines[0]
    assert "$0.2500, 1000 tokens" in lines[2]
    assert calls_total(calls) == "2 call(s) (0 failed), 1007 tokens, $0.2500"

    calls[1].update(spentTokens=40, spentUsd=0.0)
    with console.capture() as captured:
        console.print(calls_table(calls, {}))
    assert "spent" not in captured.get(), "no column while every call spent what it used"
