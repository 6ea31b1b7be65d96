"""Odd inputs a token holder can send get a 4xx naming the field, never a 500.

Each was a 500 under the real gunicorn API (found by a red-team pass): a superscript
digit in ``Last-Event-ID`` (``str.isdigit`` says yes, ``int`` says no), a budget the
UI form let past the JSON API's range (more micro-dollars than a bigint holds), and a
CR/LF in the sign-in form's ``next`` (the Location header cannot hold it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import Stack
from shared.hashing import sha256_hex
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork
from tests.factories import IntentFactory, RunFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens(sessions: sessionmaker[Session]) -> dict[str, str]:
    with UnitOfWork(sessions) as uow:
        return {
            "approver": create_token(uow, "odd-alice", Role.APPROVER),
            "submitter": create_token(uow, "odd-sam", Role.SUBMITTER),
        }


@pytest.fixture
def run_id(db: Session) -> str:
    plan = json.dumps({"design": "x", "files": [], "risks": [], "tests": []}).encode()
    run = RunFactory(
        intent=IntentFactory(goal="g", submitted_by="odd-sam"),
        status="waiting_input",
        next_action="await:approval",
        plan_sha256=sha256_hex(plan),
    )
    db.commit()
    return str(run.id)


@pytest.fixture
def client(api_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_stack.api_url, timeout=10) as c:
        yield c


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found is not None
    return found.group(1)


def _sign_in(c: httpx.Client, token: str, **form: str) -> httpx.Response:
    csrf = _csrf(c.get("/ui/login").text)
    return c.post("/ui/login", data={"token": token, "csrf_token": csrf, **form})


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9\xb2", b"1\xb2"])
def test_a_last_event_id_of_unicode_digits_is_a_400(
    client: httpx.Client, tokens: dict[str, str], run_id: str, value: bytes
) -> None:
    headers = {"Authorization": f"Bearer {tokens['approver']}", "Last-Event-ID": value}
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers) as reply:
        body = json.loads(reply.read())

    assert reply.status_code == 400
    assert "Last-Event-ID" in body["error"]["details"]


@pytest.mark.parametrize("usd", ["1e13", "1e15", "1000000001"])
def test_a_budget_past_the_apis_range_is_a_400_from_the_form_too(
    client: httpx.Client, tokens: dict[str, str], run_id: str, usd: str
) -> None:
    assert _sign_in(client, tokens["approver"]).status_code == 303
    csrf = _csrf(client.get(f"/ui/runs/{run_id}").text)

    form = client.post(f"/ui/runs/{run_id}/budget", data={"csrf_token": csrf, "budget_usd": usd})
    api = client.post(
        f"/runs/{run_id}/budget",
        json={"budgetUsd": float(usd)},
        headers={"Authorization": f"Bearer {tokens['approver']}"},
    )

    assert form.status_code == 400, form.text
    assert "budget_usd must be between 0 and 1e+09" in form.text
    assert api.status_code == 400, api.text


def test_a_sign_in_whose_next_holds_a_line_break_goes_to_the_run_list(
    client: httpx.Client, tokens: dict[str, str]
) -> None:
    signed_in = _sign_in(client, tokens["submitter"], next="/ui/x\r\nSet-Cookie: a=b")

    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/ui/runs"
    assert "a=b" not in signed_in.headers.get("set-cookie", "")
    assert client.get("/ui/runs").status_code == 200, "signed in"
