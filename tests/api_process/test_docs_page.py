"""The API docs page in a browser: Swagger UI renders the spec offline, under the CSP.

A real API process (gunicorn) and Debian's Chromium. Every request the page makes is
recorded: all of them go to the API itself (no CDN), none is refused, and the page
lists the API's operations. A screenshot is kept in the test's ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from devstack.kodo_procs import Stack

pytestmark = pytest.mark.integration


def test_the_docs_page_renders_every_operation_from_local_assets(
    api_stack: Stack, page: Page, tmp_path: Path
) -> None:
    requested: list[str] = []
    refused: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("requestfailed", lambda r: refused.append(r.url))

    def csp_violations(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", csp_violations)
    page.goto(f"{api_stack.api_url}/docs")  # signed out: the docs are public

    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=False)

    api_host = urlsplit(api_stack.api_url).netloc
    assert {urlsplit(url).netloc for url in requested if not url.startswith("data:")} == {api_host}
    assert refused == []
    paths = {s.replace("\u200b", "") for s in summaries}
    assert {"/runs", "/runs/{run_id}", "/intents", "/runs/{run_id}/approve-plan"} <= paths
