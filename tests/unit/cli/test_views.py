"""How the CLI draws a run's header line."""

from __future__ import annotations

from services.cli.views import run_header, step_states


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
