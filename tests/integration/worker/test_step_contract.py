"""A step whose contract differs from its run's parks the run; a matching worker resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import text, update

from bench import sqlcount
from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime
from services.worker.steps.base import load_context, run_step
from services.worker.steps.compile import compile_step
from shared.db.engine import unit_of_work
from shared.db.models import Run
from shared.domain.run_machine import StepId
from shared.domain.step_contract import step_contract_version
from shared.service.contract import resume_parked
from shared.service.messages import InMemorySender, RunStep
from tests.integration.worker.conftest import (
    approve,
    diagnostic,
    new_run,
    prompts_at_server,
    read_run,
    uow,
)

pytestmark = pytest.mark.integration


def _started_under(rt: Runtime, run_id: str, contract: str | None) -> None:
    with unit_of_work(rt.sessions) as s:
        s.execute(update(Run).where(Run.id == run_id).values(contract_version=contract))


def _queued(rt: Runtime) -> list[str]:
    raw = redis.Redis.from_url(rt.settings.redis_url).lrange("kodo", 0, -1)
    return [json.loads(m)["headers"]["task"] for m in raw]


def test_a_run_records_the_step_contract_it_was_started_under(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    assert read_run(rt, run_id).contract_version == step_contract_version()


def test_a_worker_of_another_contract_parks_the_run_visibly_and_pays_nothing(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    _started_under(rt, run_id, "0123456789abcdef")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"
    run = read_run(rt, run_id)
    assert (run.status, run.next_action, run.last_step) == (
        "waiting_upgrade",
        "await:upgrade",
        "CompileST",
    )
    assert run.error is not None
    assert run.error.startswith("step_contract: ")
    assert "0123456789abcdef" in run.error
    assert step_contract_version() in run.error
    assert prompts_at_server(rt) == 0, "no prompt was built under the other contract"
    with rt.sessions() as s:
        calls = s.execute(text("SELECT count(*) FROM app.opencode_calls")).scalar_one()
        lease = s.execute(
            text("SELECT lease_expires_at FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert calls == 0
    assert lease is None, "the lease is released: a matching worker may enter at once"
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped", "a stale delivery"


def test_only_a_worker_of_the_runs_contract_resumes_it_at_the_step_it_was_parked_at(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    _started_under(rt, run_id, "0123456789abcdef")
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    assert reconcile(rt) == []
    assert read_run(rt, run_id).status == "waiting_upgrade", "this worker's contract is another"
    assert _queued(rt) == []
    sender = InMemorySender()
    with uow(rt, sender) as work:  # a worker of the run's contract, e.g. the upgrade
        resumed = resume_parked(work, worker_contract="0123456789abcdef", now=rt.clock.now())
    assert [(r.run_id, r.step.value) for r in resumed] == [(run_id, "CompileST")]
    assert sender.sent == [RunStep(StepId.COMPILE, run_id)], "sent after the commit"
    run = read_run(rt, run_id)
    assert (run.status, run.next_action, run.error) == ("compiling", "run:CompileST", None)


def test_the_reconciler_of_a_matching_worker_resumes_and_dispatches_the_parked_step(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    with unit_of_work(rt.sessions) as s:  # parked earlier by a worker of another contract
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="waiting_upgrade", next_action="await:upgrade", error="step_contract")
        )
    reconcile(rt)
    run = read_run(rt, run_id)
    assert (run.status, run.next_action, run.error) == ("applying", "run:ApplyPatchST", None)
    assert _queued(rt) == ["kodo.ApplyPatchST"]


def test_a_run_started_before_contract_versions_takes_the_first_steps_contract(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    _started_under(rt, run_id, None)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert read_run(rt, run_id).contract_version == step_contract_version()


def test_a_step_whose_attempt_is_in_the_ledger_under_another_prompt_fails_closed_unpaid(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    with unit_of_work(rt.sessions) as s:  # attempt 1, asked in other words by another build
        s.execute(
            text(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
                " request, status) VALUES (:k, :r, 'CompileST', 1, 'plan', '{}', 'succeeded')"
            ),
            {"k": "f" * 64, "r": run_id},
        )
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    run = read_run(rt, run_id)
    assert run.error is not None
    assert "ledger_attempt_unique" in run.error
    assert diagnostic(rt, run_id)["rule"] == "ledger_attempt_unique", "the triage names it too"
    assert prompts_at_server(rt) == 0, "the changed prompt was never sent"
    with rt.sessions() as s:
        calls = s.execute(text("SELECT count(*) FROM app.opencode_calls")).scalar_one()
    assert calls == 1


def test_a_delivery_enters_without_a_transaction_but_parks_a_mismatch_in_one(
    rt: Runtime, repo: Path
) -> None:
    """The snapshot and the lease are one statement, run alone (no BEGIN, no COMMIT);
    parking a run of another contract is two writes, which commit together."""
    ours, theirs = new_run(rt, repo), new_run(rt, repo)
    _started_under(rt, theirs, "0123456789abcdef")
    sqlcount.listen()
    try:
        before = sqlcount.snapshot()
        assert load_context(rt, ours, StepId.COMPILE) is not None
        entered = sqlcount.snapshot()
        assert load_context(rt, theirs, StepId.COMPILE) is None
        parked = sqlcount.snapshot()
    finally:
        sqlcount.unlisten()

    def grew(a: dict[str, int], b: dict[str, int], key: str) -> int:
        return b.get(key, 0) - a.get(key, 0)

    assert [grew(before, entered, k) for k in ("statements", "begins", "commits")] == [1, 0, 0]
    assert [grew(entered, parked, k) for k in ("begins", "commits")] == [1, 1]
    assert read_run(rt, theirs).status == "waiting_upgrade"
