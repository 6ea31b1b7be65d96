"""Errors on the browser's routes are pages; everywhere else they stay JSON.

A person who opens a missing run's page, or posts to a page that takes no posts, reads
an HTML page saying what happened (and where to go), not a JSON document; text that
may quote an agent shows its markup and control characters as visible text.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.api.errors import error_response

pytestmark = pytest.mark.integration


def test_a_missing_run_page_is_an_html_404(client: FlaskClient) -> None:
    response = client.get("/ui/runs/no-such-run")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<h1>Not found</h1>" in page
    assert "no-such-run" in page
    assert 'href="/ui/runs"' in page


def test_an_unknown_browser_route_and_a_wrong_method_are_pages(client: FlaskClient) -> None:
    missing = client.get("/ui/nowhere")
    wrong_method = client.post("/docs")

    assert (missing.status_code, missing.mimetype) == (404, "text/html")
    assert (wrong_method.status_code, wrong_method.mimetype) == (405, "text/html")
    assert "GET" in wrong_method.headers["Allow"]


def test_the_json_api_still_answers_errors_in_json(client: FlaskClient) -> None:
    response = client.get("/runs/no-such-run")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_an_error_page_shows_hostile_text_as_text(app: Flask) -> None:
    hostile = "<script>alert(1)</script> \x1b]8;;http://evil\x07link \u202egnp.exe"
    with app.test_request_context("/ui/runs/x"):
        page = error_response(409, "conflict", hostile, {"why": [hostile]}).get_data(as_text=True)

    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "\x1b" not in page
    assert "\x07" not in page
    assert "\u202e" not in page
