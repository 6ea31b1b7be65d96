"""Red-team helper-112: the role that may not raise a run's budget picks any budget it likes.

``POST /runs/{id}/budget`` is a decision (auth.DECIDE_ENDPOINTS): a submitter's token
is refused (403), so a run's budget is raised by an approver. But ``POST /intents``
(a submitter's request) takes ``budgetUsd`` / ``budgetTokens`` up to $1e9 and 10**15
tokens (schemas.BUDGET_USD_MAX), and the operator's ``KODO_BUDGET_USD`` /
``KODO_BUDGET_TOKENS`` is only the default of an intent that names none: the submitter
starts its run with the budget it could not have raised to. The safe outcome: an intent
may not ask for more than the operator's budget without a decision (refused, naming
the rule), as a raise after the start may not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.service.tokens import Role
from tests.integration.api.conftest import NOW, issue_token

pytestmark = pytest.mark.integration


@pytest.fixture
def capped_app(
    settings: Settings, sessions: sessionmaker[Session], broker: object
) -> Iterator[Flask]:
    """The API with an operator's budget of $1 and 100,000 tokens per run."""
    built = create_app(
        replace(settings, budget_usd=1.0, budget_tokens=100_000), clock=FixedClock(NOW)
    )
    yield built
    state_of(built).close()  # (its engine's connections, as the suite's own app does)


def test_a_submitter_cannot_give_its_intent_more_than_the_operators_budget(
    capped_app: Flask, sessions: sessionmaker[Session], git_repo: Path
) -> None:
    submitter = capped_app.test_client()
    submitter.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {issue_token(sessions, 'sam', Role.SUBMITTER)}"
    )
    raise_after = submitter.post(
        "/runs/00000000-0000-0000-0000-000000000000/budget", json={"budgetUsd": 1e9}
    )
    assert raise_after.status_code == 403  # a submitter may not raise a budget...

    reply = submitter.post(
        "/intents",
        json={
            "repo": str(git_repo),
            "goal": "spend freely",
            "budgetUsd": 1e9,
            "budgetTokens": 10**15,
            "run": True,
        },
    )

    # ...so it may not start a run with one the operator never allowed either
    if reply.status_code == 201:
        run_id = reply.json["run"]["runId"]
        budget = submitter.get(f"/runs/{run_id}").json["budget"]
        pytest.fail(
            f"the submitter's run {reply.json['run']['status']} with budget"
            f" usd={budget['usd']['limit']} tokens={budget['tokens']['limit']}"
            " against the operator's $1 / 100000 tokens"
        )
    assert reply.status_code in (400, 403, 409)
