"""Request changes on the run page, in a headless browser against a real stack: the
approver sends the plan back with a comment, the page follows the run until the revision
waits, then shows the revision, the comment and the diff between the two plans.

Screenshots of both states are kept in the test's ``tmp_path`` for a person to review.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from devstack.kodo_procs import Stack
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e

COMMENT = "Please also update README.md."


def test_an_approver_requests_changes_on_the_page_and_sees_the_revision_and_its_diff(
    api: Api, stack: Stack, sample_repo: Path, page: Page, tmp_path: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test")
    first = api.wait_for(run_id, {"waiting_input"})["planSha256"]

    token = api.bearer("iris", "approver")["Authorization"].removeprefix("Bearer ")
    page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    page.fill("#login-token", token)
    page.click("#sign-in")
    page.wait_for_url(f"**/ui/runs/{run_id}")
    assert page.locator("#plan-sha256").inner_text() == first

    page.fill("#comment", COMMENT)
    page.screenshot(path=str(tmp_path / "1-request-changes.png"), full_page=True)
    page.click("#request-changes")
    page.wait_for_url(f"**/ui/runs/{run_id}")

    # The page follows the run (while the revision compiles, it shows the comment under
    # the plan sent back) and reloads once the revision waits for a decision.
    expect(page.locator("#plan-revision")).to_have_text("2", timeout=60_000)
    second = page.locator("#plan-sha256").inner_text()
    assert second != first
    assert page.locator("#plan-download").get_attribute("download") == "plan.r2.json"
    diff = page.locator("#revision-2 pre.diff")
    expect(diff.locator(".added").first).to_be_visible()
    assert "README.md" in diff.locator(".added").all_inner_texts()[-1]
    assert COMMENT in page.locator("#revisions q.comment").inner_text()
    assert page.locator("#approve").count() == 1, "the revision can be decided on"
    page.screenshot(path=str(tmp_path / "2-revision-and-diff.png"), full_page=True)
    assert (tmp_path / "2-revision-and-diff.png").read_bytes().startswith(b"\x89PNG")
