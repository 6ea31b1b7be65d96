"""The run page and the runs page in headless Chromium, one screenshot per state.

Debian's Chromium driven by Playwright (as test_browser.py), against a real API process
(gunicorn, gevent) on the test database, with runs stored as the worker stores them
(tests/api_process/review_runs.py). The browser runs in Tokyo's time zone, so a time
shown in local time is told apart from the UTC the server sends. Each state's
screenshot is kept in the test's own ``tmp_path`` for a person to review.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text
from sqlalchemy.orm import Session

from devstack.kodo_procs import Stack
from shared.db.models import StepRun
from tests.api_process.conftest import api_process
from tests.api_process.review_runs import (
    APPROVER,
    BASE_COMMIT,
    COMMENT,
    HOSTILE_VISIBLE,
    SUBMITTER,
    store_failed_run,
    store_hostile_review,
    store_succeeded_run,
    store_waiting_run,
)
from tests.factories import IntentFactory, RunFactory

pytestmark = pytest.mark.integration

BIDI_AND_ESCAPES = frozenset("\x1b\x07\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@pytest.fixture
def tokyo(browser: Browser) -> Iterator[Page]:
    """A page whose browser lives at UTC+9 and formats dates as en-GB."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo", locale="en-GB"
    )
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, api_url: str, token: str, then: str) -> None:
    page.goto(f"{api_url}{then}")
    page.wait_for_url("**/ui/login**")
    page.fill("#login-token", token)
    page.click("#sign-in")
    page.wait_for_url(f"**{then}")


def shot(page: Page, folder: Path, name: str) -> None:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_waiting_run_shows_who_asked_on_which_commit_and_follows_the_run_live(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    run = store_waiting_run(db).run

    sign_in(tokyo, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    assert tokyo.locator("#submitter").inner_text() == SUBMITTER
    assert tokyo.locator("#base-commit").inner_text() == BASE_COMMIT
    assert tokyo.locator("#status").inner_text() == "waiting_input"
    assert tokyo.locator("#approve").count() == 1, "an approver may decide here"
    assert "01/03/2026, 21:00:00" in tokyo.locator("#submitted-at").inner_text(), "local time"
    assert tokyo.locator("#submitted-at time").get_attribute("title") == "2026-03-01 12:00:00 UTC"
    assert tokyo.locator("#timeline tr.step").count() == 1
    expect(tokyo.locator("#message")).to_have_text("Following the run live.")
    shot(tokyo, tmp_path, "1-waiting-for-approval.png")

    start_applying(db, run.id)

    expect(tokyo.locator("#status")).to_have_text("applying")  # the page reloaded by itself
    expect(tokyo.locator("#last-step")).to_have_text("ApplyPatchST")
    assert tokyo.locator("#approve").count() == 0
    applying = tokyo.locator("#timeline tr.step[data-step='ApplyPatchST']")
    assert applying.locator(".duration").inner_text() == "running"
    shot(tokyo, tmp_path, "2-followed-live-to-applying.png")


def test_a_page_refused_a_stream_follows_the_run_by_polling(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    run = store_waiting_run(db).run
    tokyo.route(
        "**/events",
        lambda route: route.fulfill(status=429, content_type="application/json", body="{}"),
    )

    sign_in(tokyo, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    expect(tokyo.locator("#message")).to_have_text("Following the run (polling every 2 s).")
    shot(tokyo, tmp_path, "10-stream-refused-polling.png")
    start_applying(db, run.id)
    expect(tokyo.locator("#status")).to_have_text("applying")
    assert tokyo.locator("#approve").count() == 0


@pytest.fixture(scope="module")
def renewing_api(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An API that renews every event stream after a second (KODO_SSE_MAX_S)."""
    root = tmp_path_factory.mktemp("renewing")
    with api_process(root, database_url, redis_url, KODO_SSE_MAX_S="1") as stack:
        yield stack


WATCH_MESSAGE = """() => {
  window.messages = [];
  const message = document.getElementById("message");
  new MutationObserver(() => window.messages.push(message.textContent))
    .observe(message, {childList: true, characterData: true, subtree: true});
}"""


def test_a_stream_the_server_renews_is_followed_with_no_reconnecting_notice(
    renewing_api: Stack, reader_token: str, db: Session, tokyo: Page
) -> None:
    """A renewal (``event: reconnect``, then the browser's own reconnect with
    Last-Event-ID) loses nothing and is not an interruption: the page said
    "Reconnecting to the live stream..." after every renewal until the run moved."""
    run = store_waiting_run(db).run
    streams: list[str] = []
    tokyo.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)

    sign_in(tokyo, renewing_api.api_url, reader_token, f"/ui/runs/{run.id}")
    expect(tokyo.locator("#message")).to_have_text("Following the run live.")
    tokyo.evaluate(WATCH_MESSAGE)
    for _ in range(100):  # three renewals: each stream lives 1 s, the retry waits 2 s
        if len(streams) >= 4:
            break
        tokyo.wait_for_timeout(200)
    assert len(streams) >= 4, f"{len(streams)} streams opened"

    shown = tokyo.evaluate("window.messages")
    assert not any("Reconnecting" in m for m in shown), shown
    expect(tokyo.locator("#message")).to_have_text("Following the run live.")
    start_applying(db, run.id)  # still followed live after the renewals
    expect(tokyo.locator("#status")).to_have_text("applying")


def start_applying(db: Session, run_id: str) -> None:
    """What the worker commits as ApplyPatchST starts: the run moves on, the step runs."""
    db.add(
        StepRun(
            run_id=run_id,
            step_id="ApplyPatchST",
            status="running",
            deliveries=1,
            started_at=datetime.now(UTC),
        )
    )
    db.execute(
        text(
            "UPDATE app.runs SET status = 'applying', last_step = 'ApplyPatchST',"
            " next_action = 'run:ApplyPatchST' WHERE id = :id"
        ),
        {"id": run_id},
    )
    db.commit()


def test_a_succeeded_run_shows_its_diff_verification_decision_timeline_and_artifacts(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    stored = store_succeeded_run(db)
    run = stored.run

    sign_in(tokyo, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    assert tokyo.locator("#status").inner_text() == "succeeded"
    assert tokyo.locator("#message").inner_text() == "The run succeeded."
    assert tokyo.locator("#decided-by").inner_text() == APPROVER
    assert tokyo.locator("#decided-comment").inner_text().strip() == COMMENT
    diff = tokyo.locator("#patch-1")
    assert "2 files changed" in diff.locator("summary").inner_text()
    assert diff.locator("table.diffstat tr").all_inner_texts()[0].split() == [
        "calc.py",
        "modified",
        "+4",
        "\u22120",
    ]
    added = diff.locator("tr.add td.src").all_inner_texts()
    assert "+def multiply(a, b):" in added
    assert diff.locator("tr.add .tok-k", has_text="def").count() >= 2, "keywords highlighted"
    assert diff.locator("tr.add .tok-s", has_text='"twelve"').count() == 0, "a comment, not text"
    assert diff.locator("tr.add .tok-c").count() >= 1
    verification = tokyo.locator("#verification-1")
    assert verification.locator("code.command").inner_text() == (
        "python -m pytest -q tests/test_calc.py"
    )
    assert verification.locator(".badge.exit").inner_text() == "exit 0"
    assert "1 passed in 0.01s" in verification.locator("pre.output").inner_text()
    steps = tokyo.locator("#timeline tr.step")
    assert [s.get_attribute("data-step") for s in steps.all()] == [
        "CompileST",
        "ApplyPatchST",
        "DecideST",
        "ExecuteST",
    ]
    assert "$0.0340" in steps.nth(1).inner_text()
    assert "4.1 s" in steps.nth(1).inner_text()
    row = tokyo.locator("#artifacts tr", has=tokyo.locator("a", has_text="patch.diff"))
    link = row.locator("a")
    assert row.locator(".sha").inner_text() == stored.patch_sha256
    served = tokyo.request.get(f"{api_stack.api_url}{link.get_attribute('href')}")
    assert hashlib.sha256(served.body()).hexdigest() == stored.patch_sha256
    shot(tokyo, tmp_path, "3-succeeded-diff-and-verification.png")

    tokyo.click("#diff-split")
    tokyo.wait_for_url(f"**/ui/runs/{run.id}?diff=split#diff")
    split = tokyo.locator("#patch-1 table.code.split").first
    paired = split.locator("tr", has=tokyo.locator("td.src.add", has_text="def multiply(a, b):"))
    assert paired.locator("td.empty").count() == 2, "an addition with nothing beside it"
    context = split.locator("tr", has=tokyo.locator("td.src.ctx", has_text="def add(a, b):"))
    assert context.locator("td.src.ctx").count() == 2, "context on both sides"
    shot(tokyo, tmp_path, "3b-succeeded-diff-side-by-side.png")


def test_a_failed_run_shows_its_diagnostic_and_both_verification_rounds(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    run = store_failed_run(db).run

    sign_in(tokyo, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    assert tokyo.locator("#status").inner_text() == "failed"
    diagnostic = tokyo.locator("#diagnostics pre.output").inner_text()
    assert '"rule": "verification_failed"' in diagnostic
    assert '"exit_code": 1' in diagnostic
    assert tokyo.locator("#verification .verification").count() == 2
    assert "E       assert 11 == 12" in tokyo.locator("#verification-2 pre.output").inner_text()
    execute = tokyo.locator("#timeline tr.step[data-step='ExecuteST']")
    assert execute.count() == 2, "the ended round and the current one"
    assert "deliveries" in tokyo.locator("#timeline thead").inner_text()
    assert execute.nth(1).locator("td").nth(3).inner_text() == "2"
    assert tokyo.locator("#follow").count() == 0, "a finished run is not followed"
    shot(tokyo, tmp_path, "4-failed-with-diagnostic.png")


def test_a_hostile_diff_and_command_output_show_as_text(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    run = store_hostile_review(db).run

    sign_in(tokyo, api_stack.api_url, reader_token, f"/ui/runs/{run.id}")

    title = tokyo.title()
    shown = tokyo.inner_text("body")
    dom_text = tokyo.evaluate("document.documentElement.textContent")
    for escape in HOSTILE_VISIBLE:
        assert escape in shown, f"{escape} is visible on the page"
    assert not any(char in dom_text for char in BIDI_AND_ESCAPES), "no raw control in the DOM"
    assert '<img src=x onerror="document.title=1">' in tokyo.locator("#diff").inner_text()
    assert "<script>alert(1)</script>" in tokyo.locator("#verification pre.output").inner_text()
    assert tokyo.locator("#diff img, #verification img, main script:not(#follow)").count() == 0
    assert tokyo.locator("a[href^='http://evil']").count() == 0, "no link smuggled in"
    assert tokyo.title() == title != "1", "no injected handler ran"
    shot(tokyo, tmp_path, "5-hostile-diff-and-output.png")


def test_the_runs_page_lists_every_run_and_filters_by_status_submitter_and_repository(
    api_stack: Stack, reader_token: str, db: Session, tokyo: Page, tmp_path: Path
) -> None:
    done = store_succeeded_run(db).run
    failed = store_failed_run(db).run
    waiting = RunFactory(
        waiting_input=True,
        intent=IntentFactory(goal="Rename add to plus", submitted_by="wes", repo_path="/srv/b"),
        spent_usd_micro=12_500,
        spent_tokens=900,
    )
    db.commit()

    sign_in(tokyo, api_stack.api_url, reader_token, "/ui/runs")

    rows = tokyo.locator("#runs tr.run")
    assert {r.get_attribute("data-run-id") for r in rows.all()} == {done.id, failed.id, waiting.id}
    row = tokyo.locator(f"#runs tr.run[data-run-id='{waiting.id}']")
    assert row.locator(".run-id").inner_text() == waiting.id
    assert row.locator(".submitter").inner_text() == "wes"
    assert row.locator(".cost").inner_text() == "$0.0125"
    assert row.locator(".age").inner_text().endswith("s"), "submitted seconds ago"
    finished = tokyo.locator(f"#runs tr.run[data-run-id='{done.id}']")
    assert finished.locator(".cost").inner_text() == "$0.0490"
    assert finished.locator(".tokens").inner_text() == "4900"
    assert finished.locator(".age").inner_text().endswith("d"), "submitted on 2026-03-01"
    shot(tokyo, tmp_path, "6-runs-page.png")

    tokyo.select_option("#filter-status", "succeeded")
    tokyo.fill("#filter-submitter", SUBMITTER)
    tokyo.click("#apply-filters")
    tokyo.wait_for_url("**/ui/runs?status=succeeded&submitter=sam&repo=")
    assert [r.get_attribute("data-run-id") for r in rows.all()] == [done.id]
    shot(tokyo, tmp_path, "7-runs-page-filtered-by-status-and-submitter.png")

    tokyo.click("#clear-filters")
    tokyo.locator(f"#runs tr.run[data-run-id='{waiting.id}'] .repo a").click()
    tokyo.wait_for_url("**/ui/runs?repo=%2Fsrv%2Fb")
    assert [r.get_attribute("data-run-id") for r in rows.all()] == [waiting.id]
    shot(tokyo, tmp_path, "8-runs-page-filtered-by-repository.png")

    tokyo.goto(f"{api_stack.api_url}/ui/approvals")
    tokyo.wait_for_url("**/ui/runs?status=waiting_input")
    assert tokyo.locator("#filter-status").input_value() == "waiting_input"
    assert [r.get_attribute("data-run-id") for r in rows.all()] == [waiting.id]
    shot(tokyo, tmp_path, "9-waiting-runs-from-the-old-approvals-page.png")
