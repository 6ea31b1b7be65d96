"""`kodo intent|run|calls` against a real API: output, and exit codes scripts rely on."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.cli.conftest import Kodo

pytestmark = pytest.mark.integration

GOAL = "Add a multiply function to calc.py with a test"


def submit(kodo: Kodo, name: str) -> str:
    result = kodo(
        "intent", "submit", "--repo", str(kodo.sample_repo(name)), "--goal", GOAL, "--json"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["run"]["runId"] == body["intent"]["intentId"]
    run_id: str = body["intent"]["intentId"]
    return run_id


def test_a_run_is_submitted_watched_to_its_plan_approved_and_watched_to_success(
    kodo: Kodo,
) -> None:
    run_id = submit(kodo, "happy")

    waiting = kodo("run", "watch", run_id, "--timeout", "60")
    assert waiting.exit_code == 0, waiting.output
    assert "Plan card (sha256 " in waiting.output
    hint = re.search(rf"kodo run approve {run_id} --plan-sha256 ([0-9a-f]{{64}}) ", waiting.output)
    assert hint is not None, waiting.output
    assert f"Plan card (sha256 {hint.group(1)})" in waiting.output, "the card's own digest"

    alice = kodo.token("alice", "approver")
    approved = kodo(
        "run", "approve", run_id, "--plan-sha256", hint.group(1), "--token", alice,
        "--approver", "alice",
    )  # fmt: skip
    assert approved.exit_code == 0, approved.output
    assert "as alice" in approved.output

    done = kodo("run", "watch", run_id, "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert f"run {run_id} succeeded" in done.output

    status = kodo("run", "status", run_id, "--json")
    assert status.exit_code == 0
    assert json.loads(status.output)["status"] == "succeeded"
    table = kodo("run", "status", run_id)
    assert "ExecuteST" in table.output
    assert "succeeded" in table.output

    calls = kodo("calls", run_id)
    assert calls.exit_code == 0, calls.output
    for step in ("CompileST", "ApplyPatchST", "DecideST"):
        assert step in calls.output
    assert "tokens" in calls.output
    ledger = json.loads(kodo("calls", run_id, "--json").output)
    assert {c["stepId"] for c in ledger["calls"]} == {"CompileST", "ApplyPatchST", "DecideST"}


def test_a_rejected_plan_ends_the_run_and_watch_exits_1(kodo: Kodo) -> None:
    run_id = submit(kodo, "rejected")
    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0

    bob = kodo.token("bob", "approver")
    rejected = kodo("run", "reject", run_id, "--token", bob, "--comment", "too risky")
    assert rejected.exit_code == 0, rejected.output
    assert "as bob" in rejected.output

    watched = kodo("run", "watch", run_id, "--timeout", "30")
    assert watched.exit_code == 1
    assert "ended rejected" in watched.output


def test_approving_without_a_digest_off_a_terminal_is_refused_and_sends_nothing(
    kodo: Kodo,
) -> None:
    """Nothing shows a script the plan it would approve: it must name the digest."""
    run_id = submit(kodo, "no-digest")
    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0

    refused = kodo("run", "approve", run_id)

    assert refused.exit_code == 1
    assert "pass --plan-sha256 DIGEST" in refused.output
    status = json.loads(kodo("run", "status", run_id, "--json").output)
    assert status["status"] == "waiting_input", "no decision was sent"


def test_approving_a_digest_that_is_not_the_plan_is_refused_with_exit_1(kodo: Kodo) -> None:
    run_id = submit(kodo, "digest")
    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0

    refused = kodo("run", "approve", run_id, "--plan-sha256", "0" * 64)
    assert refused.exit_code == 1
    assert "409" in refused.output


def test_no_run_start_leaves_the_intent_unstarted_until_run_start(kodo: Kodo) -> None:
    repo = kodo.sample_repo("later")
    created = kodo("intent", "submit", "--repo", str(repo), "--goal", GOAL, "--no-run")
    assert created.exit_code == 0, created.output
    intent_id = created.output.split()[1]
    assert "kodo run start" in created.output

    started = kodo("run", "start", intent_id)
    assert started.exit_code == 0, started.output
    assert started.output.startswith(f"run {intent_id} ")


def test_cancel_ends_the_run_and_only_an_approver_may(kodo: Kodo) -> None:
    run_id = submit(kodo, "cancel")
    submitter = kodo.token("sue", "submitter")
    refused = kodo("run", "cancel", run_id, "--token", submitter)
    assert refused.exit_code == 1
    assert "403" in refused.output
    result = kodo("run", "cancel", run_id)  # the local admin token `kodo up` made
    assert result.exit_code == 0, result.output
    assert run_id in result.output
    assert "cancelled" in kodo("run", "status", run_id).output


def test_an_unknown_run_is_exit_1_with_the_apis_message(kodo: Kodo) -> None:
    result = kodo("run", "status", "no-such-run")
    assert result.exit_code == 1
    assert "404" in result.output
    assert "no-such-run" in result.output


def test_an_unreachable_api_is_exit_1_naming_the_url(kodo: Kodo) -> None:
    result = kodo("run", "status", "x", "--api-url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert "cannot reach the API at http://127.0.0.1:1" in result.output


def test_a_missing_option_is_a_usage_error_exit_2(kodo: Kodo) -> None:
    result = kodo("intent", "submit", "--repo", str(kodo.repo_root))
    assert result.exit_code == 2
    assert "--goal" in result.output


def test_a_bad_token_is_exit_1_with_the_apis_401(kodo: Kodo) -> None:
    result = kodo("run", "status", "no-such-run", "--token", "s3cret")
    assert result.exit_code == 1
    assert "401" in result.output


def test_request_changes_sends_the_plan_back_and_plans_lists_both_revisions(kodo: Kodo) -> None:
    run_id = submit(kodo, "revise")
    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0
    first = json.loads(kodo("run", "status", run_id, "--json").output)["planSha256"]

    submitter = kodo.token("sam", "submitter")
    digest = ("--plan-sha256", first)
    refused = kodo("run", "request-changes", run_id, "-m", "smaller", *digest, "--token", submitter)
    assert refused.exit_code == 1
    assert "403" in refused.output, "deciding is an approver's"

    rita = kodo.token("rita", "approver")
    unseen = kodo("run", "request-changes", run_id, "-m", "Also update README.md", "--token", rita)
    assert unseen.exit_code == 1, "off a terminal, the plan sent back must be named"
    assert "pass --plan-sha256 DIGEST" in unseen.output
    comment = ("-m", "Also update README.md")
    asked = kodo("run", "request-changes", run_id, *comment, *digest, "--token", rita)
    assert asked.exit_code == 0, asked.output
    assert "revision 2 is compiling" in asked.output

    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0
    listed = kodo("run", "plans", run_id)
    assert listed.exit_code == 0, listed.output
    assert f"revision 1: sha256 {first}" in listed.output
    assert "decision: changes_requested by rita" in listed.output
    assert "comment:  Also update README.md" in listed.output
    assert "revision 2: sha256 " in listed.output
    assert "(current)" in listed.output
    plans = json.loads(kodo("run", "plans", run_id, "--json").output)
    assert [r["revision"] for r in plans["revisions"]] == [1, 2]
    assert plans["currentPlanSha256"] == plans["revisions"][1]["planSha256"] != first


def test_a_budget_is_given_at_submit_shown_by_status_and_raised_by_an_approver(
    kodo: Kodo,
) -> None:
    repo = kodo.sample_repo("budget")
    made = kodo(
        "intent", "submit", "--repo", str(repo), "--goal", GOAL, "--budget-usd", "3.001", "--json"
    )
    assert made.exit_code == 0, made.output
    run_id = json.loads(made.output)["intent"]["intentId"]
    assert kodo("run", "watch", run_id, "--timeout", "60").exit_code == 0
    status = kodo("run", "status", run_id)
    assert "budget: $0.00" in status.output
    assert "of $3.0010" in status.output

    refused = kodo("run", "budget", run_id)
    assert refused.exit_code == 2, "name a new limit"
    rita = kodo.token("rita-budget", "approver")
    raised = kodo("run", "budget", run_id, "--usd", "7.5", "--tokens", "900000", "--token", rita)
    assert raised.exit_code == 0, raised.output
    assert "of $7.5000" in raised.output
    assert "of 900000 tokens" in raised.output
    assert "resumed" not in raised.output, "the run was not stopped on its budget"
