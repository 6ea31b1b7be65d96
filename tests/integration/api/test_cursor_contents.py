"""Red-team helper-112: a cursor is client input; what it decodes to must be text Postgres
can carry and a time Postgres can compare, else a 400 naming the cursor (never a 500)."""

from __future__ import annotations

import base64
import json

import pytest
from flask.testing import FlaskClient

pytestmark = pytest.mark.integration


def _cursor(t: str, ident: str) -> str:
    raw = json.dumps({"t": t, "id": ident}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/runs", "/intents"])
@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("2026-11-30T12:00:00+00:00", "a\u0000b"),  # NUL in the id
        _cursor("2026-11-30T12:00:00+00:00", "\ud800"),  # a lone surrogate
    ],
    ids=["nul-id", "surrogate-id"],
)
def test_a_cursor_whose_id_postgres_cannot_carry_is_a_400_naming_the_cursor(
    client: FlaskClient, path: str, cursor: str
) -> None:
    response = client.get(path, query_string={"cursor": cursor})

    assert response.status_code == 400, (
        response.status_code,
        response.get_data(as_text=True)[:300],
    )
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert "cursor" in error["details"]


@pytest.mark.parametrize(
    "query",
    [
        {"submitter": "ann\u0000"},
        {"repo": "/srv/repos/a\u0000"},
        {"cursor": _cursor("2026-11-30T12:00:00+00:00", "a\u0000b")},
    ],
    ids=["nul-submitter", "nul-repo", "nul-cursor-id"],
)
def test_the_runs_page_answers_a_filter_postgres_cannot_carry_with_its_error_not_a_500(
    client: FlaskClient, query: dict[str, str]
) -> None:
    """The UI's runs page reads ``submitter``, ``repo`` and ``cursor`` straight from the
    query string (services/api/ui.py _filter_value): none of the JSON API's clean_text."""
    response = client.get("/ui/runs", query_string=query)

    assert response.status_code == 400, (
        response.status_code,
        response.get_data(as_text=True)[:200],
    )
