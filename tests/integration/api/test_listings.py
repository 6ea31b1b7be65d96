"""``GET /runs`` and ``GET /intents``: newest first, keyset pages, filters, fail-closed cursors.

Real Postgres. Rows are written with chosen creation times (some equal, so the id
breaks the tie) and the pages are walked to the end: every row exactly once, in order,
whatever rows arrive between pages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from shared.db.models import Intent, Run
from tests.factories import IntentFactory, RunFactory

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _run(db: Session, minutes: int, **kw: Any) -> Run:
    submitted_by = kw.pop("submitted_by", "ann")
    repo = kw.pop("repo", "/srv/repos/a")
    intent = IntentFactory(
        created_at=T0 + timedelta(minutes=minutes), submitted_by=submitted_by, repo_path=repo
    )
    run: Run = RunFactory(intent=intent, created_at=T0 + timedelta(minutes=minutes), **kw)
    return run


def _walk(client: FlaskClient, path: str, key: str, **query: str) -> list[list[str]]:
    """Every page's ids, following nextCursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, query_string=params)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        id_key = "runId" if key == "runs" else "intentId"
        pages.append([item[id_key] for item in body[key]])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor never ended"


def test_runs_are_listed_newest_first_in_keyset_pages_ties_broken_by_id(
    client: FlaskClient, db: Session
) -> None:
    runs = [_run(db, minutes) for minutes in (0, 1, 1, 1, 2, 3, 5)]
    db.commit()
    expected = [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]

    pages = _walk(client, "/runs", "runs", limit="3")

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == expected


def test_a_run_summary_says_who_what_where_and_what_it_cost(
    client: FlaskClient, db: Session
) -> None:
    run = _run(db, 0, waiting_input=True, submitted_by="rita")
    run.spent_usd_micro, run.spent_tokens = 1_250_000, 4200
    intent = db.get(Intent, run.intent_id)
    assert intent is not None
    intent.base_commit = "a" * 40
    db.commit()

    [summary] = client.get("/runs").get_json()["runs"]

    assert summary == {
        "runId": run.id,
        "intentId": run.id,
        "status": "waiting_input",
        "nextAction": run.next_action,
        "lastStep": run.last_step,
        "goal": intent.goal,
        "repo": "/srv/repos/a",
        "baseRef": "HEAD",
        "baseCommit": "a" * 40,
        "submittedBy": "rita",
        "planSha256": run.plan_sha256,
        "costUsd": 1.25,
        "tokens": 4200,
        "createdAt": run.created_at.isoformat(),
        "updatedAt": summary["updatedAt"],
        "finishedAt": None,
    }


def test_runs_filter_by_status_submitter_and_repository(client: FlaskClient, db: Session) -> None:
    waiting = _run(db, 0, waiting_input=True, submitted_by="rita", repo="/srv/repos/a")
    _run(db, 1, waiting_input=True, submitted_by="sam", repo="/srv/repos/b")
    _run(db, 2, succeeded=True, submitted_by="rita", repo="/srv/repos/a")
    db.commit()

    def ids(**query: str) -> list[str]:
        response = client.get("/runs", query_string=query)
        assert response.status_code == 200
        return [r["runId"] for r in response.get_json()["runs"]]

    assert len(ids(status="waiting_input")) == 2
    assert ids(status="waiting_input", submitter="rita") == [waiting.id]
    assert ids(status="waiting_input", repo="/srv/repos/a") == [waiting.id]
    assert ids(submitter="nobody") == []


def test_a_page_boundary_holds_when_newer_runs_arrive_between_pages(
    client: FlaskClient, db: Session
) -> None:
    old = [_run(db, minutes) for minutes in range(4)]
    db.commit()
    first = client.get("/runs", query_string={"limit": "2"}).get_json()
    _run(db, 10)  # newer than everything listed: never shows up on a later page
    db.commit()

    rest = client.get("/runs", query_string={"limit": "10", "cursor": first["nextCursor"]})

    listed = [r["runId"] for r in first["runs"]] + [r["runId"] for r in rest.get_json()["runs"]]
    assert listed == [r.id for r in reversed(old)]


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "eyJ0IjoiMjAyNiJ9"},  # base64 of a JSON object of the wrong shape
        {"limit": "0"},
        {"limit": "201"},
        {"status": "sleeping"},
    ],
)
def test_a_bad_cursor_limit_or_status_is_a_400_naming_the_field(
    client: FlaskClient, query: dict[str, str]
) -> None:
    response = client.get("/runs", query_string=query)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert set(error["details"]) == set(query)


def test_intents_are_listed_newest_first_with_their_run_status(
    client: FlaskClient, db: Session
) -> None:
    started = _run(db, 0, waiting_input=True)
    unstarted = IntentFactory(created_at=T0 + timedelta(minutes=1), submitted_by="ann")
    db.commit()

    pages = _walk(client, "/intents", "intents", limit="1")
    body = client.get("/intents").get_json()

    assert [i for p in pages for i in p] == [unstarted.id, started.id]
    assert [(i["intentId"], i["runStatus"]) for i in body["intents"]] == [
        (unstarted.id, None),
        (started.id, "waiting_input"),
    ]
    assert body["intents"][0]["submittedBy"] == "ann"


def test_listing_needs_a_token(anonymous: FlaskClient) -> None:
    assert anonymous.get("/runs").status_code == 401
    assert anonymous.get("/intents").status_code == 401
