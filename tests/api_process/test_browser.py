"""The approval page in Chromium shows the signed plan, its controls visibly escaped.

Headless Debian Chromium driven by Playwright (as tests/e2e/shared_stack/test_approval_page.py),
against a real API process serving a hostile plan: what the approver reads is the
page's rendered text (``innerText``), with every bidi override gone from the DOM.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page
from sqlalchemy.orm import Session

from devstack.kodo_procs import Stack
from tests.api_process.hostile import (
    BIDI_CONTROLS,
    FORGED_LINE,
    GOAL,
    TRUE_PATH,
    VISIBLE_ESCAPES,
    store_hostile_run,
)

pytestmark = pytest.mark.integration


def sign_in(page: Page, api_url: str, token: str, then: str) -> None:
    page.goto(f"{api_url}{then}")
    page.wait_for_url("**/ui/login**")
    page.fill("#login-token", token)
    page.click("#sign-in")
    page.wait_for_url(f"**{then}")


def test_the_run_page_shows_the_true_path_and_the_escapes_not_the_forgery(
    api_stack: Stack, reader_token: str, db: Session, page: Page, tmp_path: Path
) -> None:
    run = store_hostile_run(db)

    sign_in(page, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    shown = page.inner_text("body")
    dom_text = page.evaluate("document.documentElement.textContent")
    assert TRUE_PATH in page.locator("#plan tbody tr").first.inner_text()
    for escape in VISIBLE_ESCAPES:
        assert escape in shown, f"{escape} is visible on the page"
    assert not any(char in dom_text for char in BIDI_CONTROLS), "no bidi control in the DOM"
    assert "\x1b" not in dom_text
    assert "\x08" not in dom_text
    assert page.title().startswith("Fix the typo in README.md\\u202e")
    assert page.title() != GOAL
    assert page.locator("a[href^='http://evil']").count() == 0, "no link smuggled in"
    rows = page.locator("#plan tbody tr").all_inner_texts()
    assert not any(r.strip().startswith(FORGED_LINE.strip()) for r in rows)
    page.screenshot(path=str(tmp_path / "hostile-plan.png"), full_page=True)


def test_the_inbox_shows_the_hostile_goal_escaped(
    api_stack: Stack, reader_token: str, db: Session, page: Page
) -> None:
    store_hostile_run(db)

    sign_in(page, api_stack.api_url, reader_token, "/ui/runs")

    assert "README.md\\u202eyek_hss a dda\\u202c" in page.inner_text("table")
    dom_text = page.evaluate("document.documentElement.textContent")
    assert not any(char in dom_text for char in BIDI_CONTROLS)
