"""Parked steps and the collector, on real Postgres, Redis and oc-compat.

A step sends its prompt with prompt_async, records the call ``sent`` and parks (its
worker thread is free); the collector wakes it when the session ends; the resumed
delivery collects, judges and records the answer. Nothing is lost: a wake-up that
comes before the park is read back by the parker, a call nothing wakes is swept at
its deadline, and a cancel aborts what was sent.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.event import listen, remove

from services.worker.cancel import abort_inflight_calls
from services.worker.collector import Collector
from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime
from services.worker.steps import compile as compile_module
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.db import direct
from shared.db.repos.ledger import LedgerRepo
from shared.domain.policy import Policy, Violation
from shared.domain.run_machine import StepId
from shared.domain.step_contract import step_contract_version
from shared.domain.step_lease import StepLease
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import StructuredCall
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodeError
from shared.queue import ABORT_CALLS, QUEUE
from shared.service.collection import wake_steps
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import cancel_run, request_changes
from shared.service.steps import EnteredStep, enter_step, park_on_call
from shared.service.uow import UnitOfWork
from tests.integration.worker.conftest import RuntimeFactory, new_run, uow, wait_lease_lapsed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _collector(rt: Runtime, client: OpenCodeClient, sender: InMemorySender) -> Collector:
    return Collector(client, rt.sessions, sender, daemon=client.base_url, reconnect_s=0.1)


def _calls(rt: Runtime, run_id: str) -> list[dict[str, object]]:
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT attempt, status, session_id, daemon, idle_at, op_key"
                " FROM app.opencode_calls WHERE run_id = :r ORDER BY attempt"
            ),
            {"r": run_id},
        ).mappings()
        return [dict(r) for r in rows]


def _step_row(rt: Runtime, run_id: str) -> dict[str, object]:
    with rt.sessions() as s:
        row = s.execute(
            text(
                "SELECT parked_on, lease_owner, fence, deliveries, status FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        ).mappings()
        return dict(row.one())


def test_a_sent_call_parks_its_step_and_a_reconciling_collector_wakes_it(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=1500]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    [call] = _calls(rt, run_id)
    assert (call["status"], call["daemon"]) == ("sent", client.base_url)
    step = _step_row(rt, run_id)
    assert (step["parked_on"], step["lease_owner"]) == (call["op_key"], "parked")

    sender = InMemorySender()
    collector = _collector(rt, client, sender)
    assert collector.reconcile() == [], "still thinking: nothing to wake"
    woken = wait_until(collector.reconcile, 10, "the turn to end")
    assert woken == [RunStep(StepId.COMPILE, run_id)]
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    [call] = _calls(rt, run_id)
    assert call["status"] == "succeeded"
    assert call["idle_at"] is not None
    step = _step_row(rt, run_id)
    assert (step["status"], step["parked_on"], step["deliveries"]) == ("succeeded", None, 1)
    with rt.sessions() as s:
        retries = s.execute(text("SELECT retry_count FROM app.runs WHERE id = :r"), {"r": run_id})
        assert retries.scalar_one() == 0, "a resumed step is not a retry"


def test_the_collector_follows_the_event_stream_and_wakes_the_step_when_the_session_ends(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    rt = async_rt
    sender = InMemorySender()
    collector = _collector(rt, client, sender)
    stop = threading.Event()
    follower = threading.Thread(target=collector.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        assert collector.wait_ready(10)
        run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=500]")
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
        wait_until(lambda: sender.sent, 10, "the collector to wake the step")
        assert sender.sent == [RunStep(StepId.COMPILE, run_id)]
        assert collector.connects == 1
    finally:
        stop.set()
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"


def _enter(rt: Runtime, run_id: str, owner: str) -> EnteredStep | None:
    """Take run_id's CompileST as a delivery of ``owner`` would (one transaction)."""
    with uow(rt) as work:
        return enter_step(
            work.session,
            run_id,
            StepId.COMPILE,
            owner=owner,
            lease_s=30,
            app_version="t",
            worker_contract=step_contract_version(),
            now=rt.clock.now(),
        )


def _claimed_call(rt: Runtime, run_id: str, session_id: str) -> tuple[str, StepLease]:
    """A call of run_id's CompileST claimed and started by a delivery that holds the step."""
    entered = _enter(rt, run_id, "w")
    assert entered is not None
    ledger = PostgresCallLedger(rt.sessions)
    call = StructuredCall(run_id, "CompileST", 1, "plan", "p", {"type": "object"}, "/w")
    assert ledger.claim(call, {"directory": "/w"}, lease=None)
    ledger.mark_started(call.op_key, session_id, "http://oc")
    return call.op_key, entered.lease


def test_a_woken_step_takes_its_parked_lease_in_one_statement(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    """The statement that reads the run takes the parked step's lease too, by resuming
    it: one statement in all, a new fence, the same delivery count, no retry counted."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=300]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    wait_until(_collector(rt, client, InMemorySender()).reconcile, 10, "the turn to end")
    before = _step_row(rt, run_id)
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    listen(rt.engine, "before_cursor_execute", seen)
    try:
        entered = _enter(rt, run_id, "test")
    finally:
        remove(rt.engine, "before_cursor_execute", seen)
    assert entered is not None
    assert len(statements) == 1, statements
    after = _step_row(rt, run_id)
    assert entered.lease.fence == after["fence"] == before["fence"] + 1
    assert after["deliveries"] == before["deliveries"], "a resume is not a redelivery"
    assert after["parked_on"] is None
    assert after["lease_owner"] == "test"
    assert _retries(rt, run_id) == 0


def _retries(rt: Runtime, run_id: str) -> int:
    with rt.sessions() as s:
        found = s.execute(
            text("SELECT retry_count FROM app.runs WHERE id = :r"), {"r": run_id}
        ).scalar_one()
        return int(found)


def test_a_woken_step_reads_its_parked_call_with_its_lease_and_collects_it_without_a_claim(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    """The call's row comes with the snapshot that takes the lease, and CompileST records
    the answer with the plan: the woken delivery is two transactions (enter; the answer
    and the outcome), no claim between them."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=300]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    wait_until(_collector(rt, client, InMemorySender()).reconcile, 10, "the turn to end")
    [call] = _calls(rt, run_id)
    with rt.sessions() as peek:  # what the woken delivery's snapshot reads, rolled back
        entered = enter_step(
            peek,
            run_id,
            StepId.COMPILE,
            owner="peek",
            lease_s=30,
            app_version="t",
            worker_contract=step_contract_version(),
            now=rt.clock.now(),
        )
        assert entered is not None
        assert entered.ledger.parked is not None
        record, age = entered.ledger.parked
        assert (record.op_key, record.status, record.session_id, record.daemon) == (
            call["op_key"],
            "sent",
            call["session_id"],
            client.base_url,
        )
        assert record.woken
        assert record.response is None
        assert age > 0
        peek.rollback()
    statements: list[str] = []
    commits: list[int] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(" ".join(statement.split()[:3]))

    listen(rt.engine, "before_cursor_execute", seen)
    listen(rt.engine, "commit", lambda _c: commits.append(1))
    try:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    finally:
        remove(rt.engine, "before_cursor_execute", seen)
    assert not [s for s in statements if s.startswith("INSERT INTO app.opencode_calls")]
    assert len(commits) == 1, "the resume is one statement, outside a transaction; the outcome"
    assert statements[0].startswith("WITH"), "the snapshot and the resume: one statement"
    assert statements[1:] == [
        "UPDATE app.opencode_calls SET",  # the answer, in the outcome's transaction
        "WITH put AS",  # the artifacts, the step's record and the run's move: one statement
    ]
    assert _calls(rt, run_id)[0]["status"] == "succeeded"
    with pytest.raises(OpenCodeError) as gone:  # deleted once the answer was recorded
        client.get_session(call["session_id"], directory=str(repo))
    assert gone.value.status == 404


def test_an_answer_whose_outcome_never_committed_is_collected_again_unpaid(
    make_rt: RuntimeFactory, client: OpenCodeClient, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The woken delivery records the answer with the outcome: a worker that dies before
    that commit leaves the row ``sent`` and the session kept, so the next delivery reads
    the same answer from the daemon instead of paying for another."""
    rt = make_rt(oc_async=True, step_lease_s=1)
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=200]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    wait_until(_collector(rt, client, InMemorySender()).reconcile, 10, "the turn to end")
    [call] = _calls(rt, run_id)

    class WorkerKilled(BaseException):
        """Stands for the process dying inside the outcome's transaction."""

    def killed(*_args: object, **_kwargs: object) -> None:
        raise WorkerKilled

    monkeypatch.setattr("services.worker.steps.base.record_outcome", killed)
    with pytest.raises(WorkerKilled):
        run_step(rt, StepId.COMPILE, run_id, compile_step)
    monkeypatch.undo()
    assert _calls(rt, run_id)[0]["status"] == "sent"  # rolled back with the outcome
    assert client.get_session(str(call["session_id"]), directory=str(repo))["id"]  # kept
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert [c["status"] for c in _calls(rt, run_id)] == ["succeeded"]
    stats = httpx.get(f"{client.base_url}/__kodo/stats").json()
    assert stats["by_session"][call["session_id"]] == 1  # one prompt, collected twice


def test_a_cancel_while_the_woken_step_judges_its_answer_keeps_the_paid_answer(
    async_rt: Runtime, client: OpenCodeClient, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome is refused (the run moved), but the answer was paid for: it is recorded
    with its usage, the run's spend counts it, and its session is deleted."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=200]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    wait_until(_collector(rt, client, InMemorySender()).reconcile, 10, "the turn to end")
    [call] = _calls(rt, run_id)
    judged = compile_module.check_plan

    def cancelled_meanwhile(policy: Policy, plan: dict[str, Any]) -> list[Violation]:
        with uow(rt) as work:  # the user cancels while the answer is being judged
            cancel_run(work, run_id, now=rt.clock.now())
        return judged(policy, plan)

    monkeypatch.setattr(compile_module, "check_plan", cancelled_meanwhile)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "superseded"
    abort_inflight_calls(rt, run_id)  # the AbortCalls task the cancel sent: nothing left
    with rt.sessions() as s:
        row = s.execute(
            text(
                "SELECT c.status, c.usage, r.spent_tokens FROM app.opencode_calls c"
                " JOIN app.runs r ON r.id = c.run_id WHERE c.run_id = :r"
            ),
            {"r": run_id},
        ).one()
    assert row.status == "succeeded"
    assert row.usage["total_tokens"] > 0
    assert row.spent_tokens == row.usage["total_tokens"]
    with pytest.raises(OpenCodeError) as gone:
        client.get_session(str(call["session_id"]), directory=str(repo))
    assert gone.value.status == 404


@pytest.mark.parametrize("woken_before", ["before it was marked sent", "after, before the park"])
def test_a_session_that_ended_before_its_step_parked_is_woken_by_the_parker(
    async_rt: Runtime, repo: Path, woken_before: str
) -> None:
    rt = async_rt
    run_id = new_run(rt, repo)
    op_key, lease = _claimed_call(rt, run_id, "ses_fast")
    ledger = PostgresCallLedger(rt.sessions)
    sender = InMemorySender()
    if woken_before == "before it was marked sent":
        with UnitOfWork(rt.sessions, sender) as work:
            assert wake_steps(work, ["ses_fast"]) == [], "its step holds the lease: parker's job"
        assert ledger.mark_sent(op_key)
    else:
        assert ledger.mark_sent(op_key)
        with UnitOfWork(rt.sessions, sender) as work:
            assert wake_steps(work, ["ses_fast"]) == [RunStep(StepId.COMPILE, run_id)]
    with uow(rt) as work:
        assert park_on_call(work.where, lease, op_key=op_key, hold_s=30, check_woken=True) == (
            "wake"
        )


@pytest.mark.parametrize("ended", [True, False], ids=["ended-before", "still-thinking"])
def test_a_parker_that_marks_its_call_sent_reads_the_collectors_mark_with_it(
    async_rt: Runtime, repo: Path, ended: bool
) -> None:
    """The park that marks its call sent reads whether the collector saw the session end
    with that mark: run alone as the worker runs it, one statement (the mark, the park
    and its lazy commit), no BEGIN, no SET LOCAL, no COMMIT, no read after."""
    rt = async_rt
    run_id = new_run(rt, repo)
    op_key, lease = _claimed_call(rt, run_id, "ses_1")
    if ended:
        with UnitOfWork(rt.sessions, InMemorySender()) as work:
            assert wake_steps(work, ["ses_1"]) == [], "its step holds the lease: parker's job"
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    listen(rt.engine, "before_cursor_execute", seen)
    try:
        with uow(rt, alone=True) as work:
            parked = park_on_call(
                work.where, lease, op_key=op_key, hold_s=30, check_woken=True, mark_sent=True
            )
            parker_sent = list(statements)
            assert _step_row(rt, run_id)["lease_owner"] == "parked", (
                "committed by the statement itself, before the unit ends"
            )
    finally:
        remove(rt.engine, "before_cursor_execute", seen)
    assert parked == ("wake" if ended else "parked")
    assert len(parker_sent) == 1, parker_sent
    assert _calls(rt, run_id)[0]["status"] == "sent"


def test_a_collector_marking_the_session_ended_while_the_parker_holds_the_call_wakes_the_step(
    async_rt: Runtime, repo: Path
) -> None:
    """The race the mark's lock decides: the parker has marked the call sent (no end
    seen) and not yet committed; the collector's mark waits for that commit, then finds
    the call sent and wakes the parked step itself."""
    rt = async_rt
    run_id = new_run(rt, repo)
    op_key, lease = _claimed_call(rt, run_id, "ses_2")
    woken: list[list[RunStep]] = []

    def collect() -> None:
        with UnitOfWork(rt.sessions, InMemorySender()) as work:
            woken.append(wake_steps(work, ["ses_2"]))

    collector = threading.Thread(target=collect)
    with uow(rt) as work:
        parked = park_on_call(
            work.where, lease, op_key=op_key, hold_s=30, check_woken=True, mark_sent=True
        )
        assert parked == "parked"
        collector.start()
        collector.join(0.5)
        assert collector.is_alive(), "the collector's mark waits for the parker's commit"
    collector.join(10)
    assert woken == [[RunStep(StepId.COMPILE, run_id)]]


def test_a_step_parked_before_its_session_ended_waits_for_the_collector(
    async_rt: Runtime, repo: Path
) -> None:
    rt = async_rt
    run_id = new_run(rt, repo)
    op_key, lease = _claimed_call(rt, run_id, "ses_slow")
    assert PostgresCallLedger(rt.sessions).mark_sent(op_key)
    with uow(rt) as work:
        assert park_on_call(work.where, lease, op_key=op_key, hold_s=30, check_woken=True) == (
            "parked"
        )
    resumed = _enter(rt, run_id, "w2")  # the wake-up's delivery takes the parked step at once
    assert resumed is not None
    assert resumed.lease.fence == lease.fence + 1
    assert resumed.first_delivery, "a resumed step is not a redelivery"
    with uow(rt) as work:
        assert park_on_call(work.where, lease, op_key=op_key, hold_s=30, check_woken=True) == (
            "superseded"
        ), "the fenced-off delivery cannot park the step again"


def test_a_call_nothing_wakes_is_swept_at_its_deadline_aborted_and_timed_out(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True, oc_timeout_ms=1000, redispatch_after_s=5)
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    swept = reconcile(rt)
    assert [(r.run_id, r.step) for r in swept] == [(run_id, StepId.COMPILE)]
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked", "attempt 2 sent"
    assert [(c["attempt"], c["status"]) for c in _calls(rt, run_id)] == [
        (1, "timed_out"),
        (2, "sent"),
    ]
    assert httpx.get(f"{oc_url}/__kodo/stats").json()["aborts"] >= 1
    with rt.sessions() as s:
        cut = s.execute(
            text(
                "SELECT usage, spent_tokens, reserved_tokens FROM app.opencode_calls"
                " WHERE run_id = :r AND attempt = 1"
            ),
            {"r": run_id},
        ).one()
    assert cut.reserved_tokens > 0
    assert cut.spent_tokens == max((cut.usage or {}).get("total_tokens", 0), cut.reserved_tokens), (
        "a model that stalls until the deadline is billed at least the bound it was given"
    )


def test_a_cancel_aborts_the_sent_call_and_records_it(
    async_rt: Runtime, oc_url: str, repo: Path
) -> None:
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    [call] = _calls(rt, run_id)
    assert abort_inflight_calls(rt, run_id) == [call["session_id"]]
    [call] = _calls(rt, run_id)
    assert call["status"] == "aborted"
    assert httpx.get(f"{oc_url}/__kodo/stats").json()["aborts"] >= 1
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"
    with rt.sessions() as s:
        billed = s.execute(
            text(
                "SELECT c.usage, c.spent_tokens, c.reserved_tokens, r.spent_tokens AS run_spent,"
                " r.reserved_tokens AS run_reserved FROM app.opencode_calls c"
                " JOIN app.runs r ON r.id = c.run_id WHERE c.run_id = :r"
            ),
            {"r": run_id},
        ).one()
    assert billed.usage is not None, "the session's totals were read after the abort"
    assert billed.reserved_tokens > 0
    assert billed.spent_tokens == max(billed.usage["total_tokens"], billed.reserved_tokens), (
        "the step the cancel cut is in no totals: the call spends at least its reservation"
    )
    assert (billed.run_spent, billed.run_reserved) == (billed.spent_tokens, 0)
    stats = httpx.get(f"{oc_url}/__kodo/stats").json()
    assert stats["deleted"] == 1, "recorded with its totals, the session is deleted"


_DURABILITY = text("SHOW synchronous_commit")


def _durability_of(where: direct.Where) -> str:
    return str(direct.execute(where, _DURABILITY).scalar_one())


def test_a_park_and_a_wake_up_commit_lazily_and_nothing_else_of_the_step_does(
    async_rt: Runtime, repo: Path
) -> None:
    """Both are redone from the rows if Postgres loses them; the lease, the claim, the
    answer and the outcome wait for the disk as ever."""
    rt = async_rt
    run_id = new_run(rt, repo)
    op_key, lease = _claimed_call(rt, run_id, "ses_lazy")
    with uow(rt) as work:
        assert _durability_of(work.where) == "on"
        parked = park_on_call(
            work.where, lease, op_key=op_key, hold_s=30, check_woken=True, mark_sent=True
        )
        assert parked == "parked"
        assert _durability_of(work.where) == "off"
    with UnitOfWork(rt.sessions, InMemorySender()) as work:
        assert wake_steps(work, ["ses_lazy"]) == [RunStep(StepId.COMPILE, run_id)]
        assert _durability_of(work.where) == "off"
    with uow(rt) as work:  # SET LOCAL: the next transaction on the connection is durable
        assert _durability_of(work.where) == "on"
        assert park_on_call(work.where, lease, op_key=op_key, hold_s=30, check_woken=False) == (
            "parked"
        )
        assert _durability_of(work.where) == "off", "a park of a call sent before, too"
    # Run alone, as the worker and the collector run them, the transaction a statement
    # makes lazy is its own: the connection's next statement waits for the disk again.
    with uow(rt, alone=True) as work:
        assert park_on_call(work.where, lease, op_key=op_key, hold_s=30, check_woken=False) == (
            "parked"
        )
        assert _durability_of(work.where) == "on"


def test_a_park_lost_with_postgres_leaves_a_call_the_next_delivery_collects(
    make_rt: RuntimeFactory, client: OpenCodeClient, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash of Postgres could undo of a lazy park: the call stays ``claimed``
    with its session (recorded durably before the prompt left) and the step holds the
    lease it entered with. Once that lapses, the reconciler sends the step again; it
    parks on the claim and collects the session's answer once the claim outlives the
    call's deadline (the claimant is dead): not declared unknown, never sent twice."""
    rt = make_rt(oc_async=True, step_lease_s=1, oc_timeout_ms=1500)
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=200]")

    def lost(*_a: object, **_k: object) -> None:
        raise RuntimeError("postgres lost the park")

    monkeypatch.setattr("services.worker.steps.base.park_on_call", lost)
    with pytest.raises(RuntimeError, match="lost the park"):
        run_step(rt, StepId.COMPILE, run_id, compile_step)
    monkeypatch.undo()
    [call] = _calls(rt, run_id)
    assert (call["status"], call["session_id"] is not None) == ("claimed", True)
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    redispatched = reconcile(rt)
    assert [(r.run_id, r.step) for r in redispatched] == [(run_id, StepId.COMPILE)]
    outcome = wait_until(
        lambda: (done := run_step(rt, StepId.COMPILE, run_id, compile_step)) != "parked" and done,
        20,
        "the call's answer to be collected",
    )
    assert outcome == "waiting_input"
    [call] = _calls(rt, run_id)
    assert call["status"] == "succeeded"
    assert httpx.get(f"{client.base_url}/__kodo/stats").json()["prompts"] == 1


def test_a_first_delivery_records_its_calls_session_with_the_claim_in_three_statements(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    """enter, then the claim (with the session made just before) and the park: each one
    statement run alone, no transaction; no mark_started between."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=300]")
    statements: list[str] = []
    commits: list[int] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(" ".join(statement.split()[:4]))

    listen(rt.engine, "before_cursor_execute", seen)
    listen(rt.engine, "commit", lambda _c: commits.append(1))
    try:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    finally:
        remove(rt.engine, "before_cursor_execute", seen)
    assert statements == [
        "WITH entered AS (INSERT",
        "WITH renewed AS (UPDATE",
        "WITH sent AS (UPDATE",
    ]
    assert commits == [], "each statement commits itself"
    [call] = _calls(rt, run_id)
    assert (call["status"], call["daemon"]) == ("sent", client.base_url)
    with rt.sessions() as s:
        started = s.execute(
            text("SELECT started_at IS NOT NULL FROM app.opencode_calls WHERE op_key = :k"),
            {"k": call["op_key"]},
        ).scalar_one()
    assert started
    stats = httpx.get(f"{client.base_url}/__kodo/stats").json()
    assert stats["by_session"] == {call["session_id"]: 1}, "one session, prompted once"


def _busy(oc_url: str, rt: Runtime, run_id: str) -> dict[str, Any]:
    """``GET /session/status`` of the directory the run's calls were made in."""
    with rt.sessions() as s:
        directory = s.execute(
            text("SELECT request->>'directory' FROM app.opencode_calls WHERE run_id = :r"),
            {"r": run_id},
        ).scalar_one()
    busy: dict[str, Any] = httpx.get(
        f"{oc_url}/session/status", params={"directory": directory}
    ).json()
    return busy


def _messages(oc_url: str, rt: Runtime, run_id: str, session_id: object) -> list[Any]:
    """The messages of the run's call's session at oc-compat (its prompt, its turn)."""
    with rt.sessions() as s:
        directory = s.execute(
            text("SELECT request->>'directory' FROM app.opencode_calls WHERE run_id = :r"),
            {"r": run_id},
        ).scalar_one()
    listed: list[Any] = httpx.get(
        f"{oc_url}/session/{session_id}/message", params={"directory": directory}
    ).json()
    return listed


def _cancelled_while_sending(rt: Runtime, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel, and its abort of the run's calls, land after the call's session was
    made and recorded but before its prompt reached the daemon: the abort finds an idle
    session, and the prompt goes after it."""
    client = rt.daemons.first.client
    send = client.prompt_async

    def cancelled_first(*args: Any, **kwargs: Any) -> None:
        with uow(rt) as work:
            cancel_run(work, run_id, now=rt.clock.now())
        assert abort_inflight_calls(rt, run_id) != [], "the session was made: it is aborted"
        send(*args, **kwargs)

    monkeypatch.setattr(client, "prompt_async", cancelled_first)


def _queued(rt: Runtime) -> list[tuple[str, list[Any]]]:
    """The tasks waiting on the runtime's broker: (name, args), oldest first."""
    broker = redis.Redis.from_url(rt.settings.redis_url)
    try:
        raw = broker.lrange(QUEUE, 0, -1)
    finally:
        broker.close()
    queued = []
    for item in reversed(raw):
        message = json.loads(item)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        queued.append((str(message["headers"]["task"]), list(args)))
    return queued


def _billed(rt: Runtime, run_id: str) -> Any:
    with rt.sessions() as s:
        return s.execute(
            text(
                "SELECT c.status, c.error_name, c.spent_tokens, c.reserved_tokens,"
                " r.reserved_tokens AS run_reserved FROM app.opencode_calls c"
                " JOIN app.runs r ON r.id = c.run_id WHERE c.run_id = :r"
            ),
            {"r": run_id},
        ).one()


def test_a_cancel_between_the_claim_and_the_send_is_aborted_again_by_the_parker(
    async_rt: Runtime, oc_url: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parker reads the run's status with its park: cancelled, so the turn its
    prompt started after the cancel's abort is aborted there and then, and the run's
    abort is sent again, which records the call (its turn found ended)."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
    _cancelled_while_sending(rt, run_id, monkeypatch)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "cancelled"
    [call] = _calls(rt, run_id)
    assert _messages(oc_url, rt, run_id, call["session_id"]), "the prompt reached the daemon"
    assert call["session_id"] not in _busy(oc_url, rt, run_id), "the parker aborted the turn"
    assert call["status"] == "sent", "recorded by the run's abort, not blind"
    assert (ABORT_CALLS, [run_id]) in _queued(rt)

    assert abort_inflight_calls(rt, run_id) == [call["session_id"]]  # what that task does
    billed = _billed(rt, run_id)
    assert (billed.status, billed.error_name) == ("aborted", "RunCancelled")
    assert billed.spent_tokens >= billed.reserved_tokens > 0, "spent at least its reservation"
    assert billed.run_reserved == 0, "nothing is held for the run any more"


def test_a_call_sent_while_the_cancels_abort_runs_is_left_for_the_next_abort(
    async_rt: Runtime, oc_url: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The abort reads the run's calls (this one claimed, its session idle), aborts
    the idle session (a miss), and meanwhile the prompt reaches the daemon and the
    parker commits the call ``sent``. The abort must not then record that call ended
    with no usage (its turn running on, unbilled): it stays sent; the parker aborts the
    turn it started and sends the run's abort again, which bills it."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
    client = rt.daemons.first.client
    send, abort = client.prompt_async, client.abort

    def cancelled_while_sending(*args: Any, **kwargs: Any) -> None:
        with uow(rt) as work:
            cancel_run(work, run_id, now=rt.clock.now())

        def abort_then_the_prompt_lands(session_id: str, **kw: Any) -> bool:
            missed = abort(session_id, **kw)  # the session is idle: nothing to stop
            send(*args, **kwargs)
            [call] = _calls(rt, run_id)
            with uow(rt) as work:  # the parker's commit, before the abort records
                LedgerRepo(work.session).mark_sent(str(call["op_key"]))
            return missed

        monkeypatch.setattr(client, "abort", abort_then_the_prompt_lands)
        abort_inflight_calls(rt, run_id)
        monkeypatch.setattr(client, "abort", abort)

    monkeypatch.setattr(client, "prompt_async", cancelled_while_sending)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "cancelled"
    [call] = _calls(rt, run_id)
    assert call["status"] == "sent", "not ended blind while its turn ran"
    assert _messages(oc_url, rt, run_id, call["session_id"]), "the prompt reached the daemon"
    assert call["session_id"] not in _busy(oc_url, rt, run_id), "the parker aborted the turn"

    assert abort_inflight_calls(rt, run_id) == [call["session_id"]]  # the parker's resend
    billed = _billed(rt, run_id)
    assert (billed.status, billed.error_name) == ("aborted", "RunCancelled")
    assert billed.spent_tokens >= billed.reserved_tokens > 0


def test_a_cancelled_runs_call_whose_abort_was_lost_is_swept_by_the_reconciler(
    async_rt: Runtime, oc_url: str, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No step of a cancelled run collects its call: if the abort the parker sent is
    lost (Redis may lose messages), the reconciler's pass finds the ``sent`` call of a
    cancelled run in the rows, aborts its turn and records it, billed and settled (it
    stayed ``sent`` for ever before, its turn running on unbilled, its reservation held)."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
    _cancelled_while_sending(rt, run_id, monkeypatch)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "cancelled"
    redis.Redis.from_url(rt.settings.redis_url).delete(QUEUE)  # the abort is lost
    [call] = _calls(rt, run_id)
    assert call["status"] == "sent"

    reconcile(rt)
    assert call["session_id"] not in _busy(oc_url, rt, run_id)
    billed = _billed(rt, run_id)
    assert (billed.status, billed.error_name) == ("aborted", "RunCancelled")
    assert billed.spent_tokens >= billed.reserved_tokens > 0
    assert billed.run_reserved == 0
    reconcile(rt)
    assert _billed(rt, run_id) == billed, "swept once"


def _parked_work_ms(rt: Runtime, run_id: str) -> int:
    with rt.sessions() as s:
        found: int = s.execute(
            text(
                "SELECT parked_work_ms FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        ).scalar_one()
    return found


def test_the_git_time_of_a_delivery_that_parked_counts_in_the_steps_git_ms(
    async_rt: Runtime, client: OpenCodeClient, repo: Path
) -> None:
    """CompileST's first delivery makes the worktree, sends and parks; the delivery the
    answer wakes records the outcome. Its ``git_ms`` is the step's whole git time: SQL
    must not tell the worktree's checkout as the orchestrator's time."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=500]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    parked_ms = _parked_work_ms(rt, run_id)
    assert parked_ms > 0, "the worktree was made (git) before the call was sent"

    wait_until(_collector(rt, client, InMemorySender()).reconcile, 10, "the turn to end")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    with rt.sessions() as s:
        git_ms = s.execute(
            text(
                "SELECT (output->>'git_ms')::int FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert git_ms >= parked_ms, (git_ms, parked_ms)

    with uow(rt) as work:  # a new round starts its own count
        request_changes(
            work,
            run_id,
            approver="alice",
            comment="Name it mul instead",
            now=rt.clock.now(),
            max_revisions=5,
            lease_s=30,
        )
    assert _parked_work_ms(rt, run_id) == 0


@pytest.mark.parametrize("recorded_sent", [True, False], ids=["sent", "claimed"])
def test_a_turn_past_its_token_bound_while_no_stream_was_open_is_stopped_by_the_reconcile(
    async_rt: Runtime, client: OpenCodeClient, repo: Path, recorded_sent: bool
) -> None:
    """The step's usage report came before the collector's stream opened (a restart,
    or the stack's start): its connect reads the running sessions' totals. A call the
    sender has not recorded sent yet (its prompt gone) is stopped too, and its step
    refuses the aborted turn under the bound's rule, without another attempt."""
    rt = async_rt
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:spend=300000] [oc:slow=30000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    if not recorded_sent:
        with rt.sessions() as s, s.begin():
            s.execute(
                text("UPDATE app.opencode_calls SET status = 'claimed' WHERE run_id = :r"),
                {"r": run_id},
            )
    collector = Collector(
        client, rt.sessions, InMemorySender(), daemon=client.base_url, token_bound=200_000
    )
    collector.reconcile()
    assert collector.over_bound == 1
    if not recorded_sent:
        with rt.sessions() as s, s.begin():
            s.execute(
                text("UPDATE app.opencode_calls SET status = 'sent' WHERE run_id = :r"),
                {"r": run_id},
            )
    wait_until(collector.reconcile, 10, "the aborted turn to end")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    with rt.sessions() as s:
        rows = s.execute(
            text("SELECT status, error_name FROM app.opencode_calls WHERE run_id = :r"),
            {"r": run_id},
        ).all()
    assert [tuple(r) for r in rows] == [("aborted", "CallTokenBound")]
