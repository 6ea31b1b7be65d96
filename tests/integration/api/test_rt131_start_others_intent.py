"""Red-team helper-131: any submitter starts any principal's intent.

``POST /intents/{id}/run`` needs only ``submit``: it never asks whose intent it is. An
intent made without ``run`` (``kodo intent`` then ``kodo run start``) waits for its
submitter to start it; another submitter's token starts it instead, spending that
intent's budget under that submitter's name (the run's ``submittedBy`` stays the
intent's). With an admin's intent this also steps over the budget ceiling of
helper-112: a submitter may not make an intent asking more than the operator's budget
(403 ``budget_ceiling``), yet starts an admin's $500 intent it could never have made.

The safe outcome: only the intent's own submitter (or a token that may decide or
operate) starts its run; anyone else is refused 403 and no run exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.models import Run
from shared.service.tokens import Role
from tests.integration.api.conftest import NOW, issue_token

pytestmark = pytest.mark.integration


@pytest.fixture
def capped_app(
    settings: Settings, sessions: sessionmaker[Session], broker: object
) -> Iterator[Flask]:
    """The API with an operator's budget of $1 per run (the submitter's ceiling)."""
    built = create_app(replace(settings, budget_usd=1.0), clock=FixedClock(NOW))
    yield built
    state_of(built).close()


def _as(app: Flask, sessions: sessionmaker[Session], name: str, role: Role):  # type: ignore[no-untyped-def]
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issue_token(sessions, name, role)}"
    return client


def test_a_submitter_cannot_start_another_principals_intent(
    capped_app: Flask, sessions: sessionmaker[Session], db: Session, git_repo: Path
) -> None:
    admin = _as(capped_app, sessions, "ann", Role.ADMIN)
    mallory = _as(capped_app, sessions, "mallory", Role.SUBMITTER)

    # mallory may not ask for $500 herself...
    own = mallory.post(
        "/intents", json={"repo": str(git_repo), "goal": "spend", "budgetUsd": 500.0}
    )
    assert own.status_code == 403, own.get_json()

    # ...ann drafts one, not started yet (her `kodo run start` would start it)
    drafted = admin.post(
        "/intents", json={"repo": str(git_repo), "goal": "ann's draft", "budgetUsd": 500.0}
    )
    assert drafted.status_code == 201, drafted.get_json()
    intent_id = drafted.get_json()["intentId"]

    started = mallory.post(f"/intents/{intent_id}/run")

    run = db.scalar(select(Run).where(Run.id == intent_id))
    assert started.status_code == 403, (
        f"mallory (submitter) started ann's intent: {started.status_code} {started.get_json()};"
        f" run {None if run is None else (run.status, run.budget_usd_micro)}"
    )
    assert run is None, "no run of ann's intent exists until ann (or a decider) starts it"


def test_its_submitter_or_an_admin_starts_an_intent(
    capped_app: Flask, sessions: sessionmaker[Session], git_repo: Path
) -> None:
    ann = _as(capped_app, sessions, "ann", Role.SUBMITTER)
    admin = _as(capped_app, sessions, "dora", Role.ADMIN)
    drafts = [
        ann.post("/intents", json={"repo": str(git_repo), "goal": f"draft {n}"}).get_json()
        for n in (1, 2)
    ]
    own = ann.post(f"/intents/{drafts[0]['intentId']}/run")
    assert own.status_code == 202, own.get_json()
    decided = admin.post(f"/intents/{drafts[1]['intentId']}/run")
    assert decided.status_code == 202, decided.get_json()
    missing = ann.post("/intents/0123456789abcdef0123456789abcdef/run")
    assert missing.status_code == 404, missing.get_json()
