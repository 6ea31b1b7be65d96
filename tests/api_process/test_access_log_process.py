"""A real gunicorn API process: a token sent in a query string never reaches its log."""

from __future__ import annotations

import httpx
import pytest

from devstack.kodo_procs import Stack

pytestmark = pytest.mark.integration


def test_tokens_in_query_strings_are_not_in_the_access_log(
    api_stack: Stack, reader_token: str
) -> None:
    with httpx.Client(base_url=api_stack.api_url, timeout=10) as http:
        http.get("/healthz", params={"token": reader_token})
        http.get("/runs/no-such-run/events", params={"token": reader_token, "until": "done"})
        http.get("/ui/approvals", params={"t": reader_token, "password": "hunter2"})
        http.get("/healthz", headers={"Referer": f"http://elsewhere/?token={reader_token}"})
        http.get("/healthz", params={"marker": "done-marker"})

    log = api_stack.proc("api").log_tail(400)
    assert '"GET /healthz?[omitted] HTTP/1.1" 200' in log, log
    assert "/runs/no-such-run/events?[omitted]" in log
    assert reader_token not in log
    assert "hunter2" not in log
