"""``runs.retry_count``: every time kodo tried something again for a run.

It counts each provider attempt after its round's first, each delivery of a step after
its round's first (``deliveries`` beyond 1: a Celery task retry, a broker redelivery, a
reconciler re-dispatch) and each operator's retry of a failed run. It is written by
the statement that records the retried attempt or delivery, so it can never disagree
with the ledger and the checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.api.app import create_app
from services.api.state import state_of
from services.worker.runtime import Runtime
from services.worker.steps.base import load_context, run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from shared.service.messages import InMemorySender
from shared.service.runs import request_changes
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork
from tests.integration.worker.conftest import (
    RuntimeFactory,
    new_run,
    prompts_at_server,
    wait_lease_lapsed,
)
from tests.triage import RETRIES_EXPLAINED

pytestmark = pytest.mark.integration


def retries(rt: Runtime, run_id: str) -> tuple[int, int]:
    """(retry_count, what the checkpoints and the ledger say it must be)."""
    with rt.sessions() as s:
        row = s.execute(text(RETRIES_EXPLAINED), {"r": run_id}).one()
    return int(row.retry_count), int(row.explained)


def retry_count_from_api(rt: Runtime, run_id: str) -> int:
    app = create_app(rt.settings)
    try:
        with UnitOfWork(rt.sessions) as uow:
            token = create_token(uow, f"reader-{run_id[:8]}", Role.ADMIN)
        response = app.test_client().get(
            f"/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        count: int = response.get_json()["retryCount"]
        return count
    finally:
        state_of(app).close()


def test_a_compile_that_needed_two_schema_attempts_counts_one_retry_in_the_db_and_the_api(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:invalid-attempts=1]")

    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"

    assert prompts_at_server(rt) == 2
    assert retries(rt, run_id) == (1, 1)
    assert retry_count_from_api(rt, run_id) == 1


def test_a_step_that_succeeds_at_its_first_attempt_counts_no_retry(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)

    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"

    assert retries(rt, run_id) == (0, 0), "a stale duplicate delivery is not a retry"


def test_a_redelivered_step_counts_one_retry_and_its_replayed_attempts_count_nothing(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2)
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:invalid-attempts=1]")
    ctx = load_context(rt, run_id, StepId.COMPILE)
    assert ctx is not None
    compile_step(ctx)  # both attempts are recorded; the worker "dies" before the step is
    assert retries(rt, run_id) == (1, 1)
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)

    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"

    assert prompts_at_server(rt) == 2, "the redelivery replays both attempts from the ledger"
    assert retries(rt, run_id) == (2, 2), "one retried attempt plus one redelivery"


def test_a_delivery_turned_away_by_a_live_lease_is_not_a_retry(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    assert load_context(rt, run_id, StepId.COMPILE) is not None

    assert load_context(rt, run_id, StepId.COMPILE) is None

    assert retries(rt, run_id) == (0, 0)


def test_a_revision_keeps_the_count_explained_by_the_rounds(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:invalid-attempts=1]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert retries(rt, run_id) == (1, 1)
    with UnitOfWork(rt.sessions, InMemorySender()) as work:
        request_changes(
            work,
            run_id,
            approver="rita",
            comment="Also update README.md",
            now=rt.clock.now(),
            max_revisions=5,
            lease_s=30,
        )
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    revised, explained = retries(rt, run_id)
    assert revised == explained, "a revision's first attempt is no retry, its second is"
    with rt.sessions() as s:
        kept = s.execute(
            text("SELECT round, status, attempt_base FROM app.step_rounds WHERE run_id = :r"),
            {"r": run_id},
        ).all()
    assert [tuple(k) for k in kept] == [(1, "succeeded", 0)], "round 1 as it ended"
    assert retry_count_from_api(rt, run_id) == revised
