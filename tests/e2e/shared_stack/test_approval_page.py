"""The approval page end to end, in a headless browser against a real stack.

An approver signs in with a token, opens the waiting run from the approvals list,
checks its digest and plan, clicks Approve (the signed-in session acts: the token is
never asked again) and watches the page reach ``succeeded``; then signs out, and the
pages ask to sign in again. The database holds the approval under the approver's
name for the digest shown. The finished page's screenshot is kept in the test's own
``tmp_path`` (pytest keeps the last few runs' folders).

Debian's Chromium driven by Playwright; worker, beat, API and the OpenCode-compatible
server are real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, text

from devstack.kodo_procs import Stack
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e

APPROVER = "grace"


def test_an_approver_approves_a_plan_on_the_page_and_sees_it_succeed(
    api: Api, stack: Stack, engine: Engine, sample_repo: Path, page: Page, tmp_path: Path
) -> None:
    goal = "Add a multiply function to calc.py with a test"
    run_id = api.submit(sample_repo, goal)
    waiting = api.wait_for(run_id, {"waiting_input"})

    token = api.bearer(APPROVER, "approver")["Authorization"].removeprefix("Bearer ")
    page.goto(f"{stack.api_url}/ui/approvals")  # the old inbox: now the waiting runs
    page.wait_for_url("**/ui/login?next=/ui/approvals")  # signed out: asked to sign in
    page.fill("#login-token", token)
    page.click("#sign-in")
    page.wait_for_url("**/ui/runs?status=waiting_input")
    page.locator(f"a[href='/ui/runs/{run_id}']", has_text=goal).click()  # this run's row
    page.wait_for_url(f"**/ui/runs/{run_id}")

    assert page.locator("#plan-sha256").inner_text() == waiting["planSha256"]
    assert page.locator("#status").inner_text() == "waiting_input"
    assert page.locator("#plan pre.design").inner_text().strip()
    assert page.locator("#plan tbody tr").count() >= 1  # the files the plan changes

    assert page.locator("#token").count() == 0, "signed in: the token is never asked again"
    page.click("#approve")
    page.wait_for_url(f"**/ui/runs/{run_id}")
    assert page.locator("#decided-by").inner_text() == APPROVER
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)  # the page polls
    expect(page.locator("#message")).to_have_text("The run succeeded.")

    shot = tmp_path / "approval-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG"), "the finished page, kept for a look"

    page.click("#sign-out")
    page.wait_for_url("**/ui/login")
    page.goto(f"{stack.api_url}/ui/runs")
    page.wait_for_url("**/ui/login?next=/ui/runs")  # signed out: the session is over

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT decision, approver, plan_sha256 FROM app.plan_approvals WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
    assert (row.decision, row.approver, row.plan_sha256) == (
        "approved",
        APPROVER,
        waiting["planSha256"],
    )
    assert api.run(run_id)["status"] == "succeeded"
