"""ExactlyOnceCalls against a real ledger and a real OpenCode-compatible server over HTTP."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, sessionmaker

from devstack.sample_repo import create_sample_repo
from shared.clock import SystemClock
from shared.db.engine import unit_of_work
from shared.db.models import OpenCodeCall, Run
from shared.db.repos.ledger import AttemptPromptChanged, LedgerRepo
from shared.domain.call_record import ABORT_UNCONFIRMED
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.vocab import CallStatus
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import (
    UNKNOWN_ERROR,
    CallFailed,
    CallPending,
    CallSuperseded,
    OutcomeUnknown,
    StructuredCall,
)
from shared.opencode.client import ModelRef, OpenCodeClient
from shared.opencode.exactly_once import ABORT_RETRY_S, ExactlyOnceCalls
from standins.oc_compat import running_server
from tests.factories import OpenCodeCallFactory, RunFactory
from tests.postgres_calls import SCRIPTED, calls_on_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def oc_url() -> Iterator[str]:
    with running_server(seed=3) as url:
        yield url


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_sample_repo(tmp_path / "repo")


@pytest.fixture
def run_id(db: Session) -> str:
    run = RunFactory()
    db.commit()
    return run.id


_CLIENTS: list[OpenCodeClient | ExactlyOnceCalls] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """The server keeps connections alive: every client (and wrapper) a test made is closed."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _wrapper(
    oc_url: str,
    sessions: sessionmaker[Session],
    timeout_s: float = 10.0,
    *,
    keep_sessions: bool = False,
) -> ExactlyOnceCalls:
    client = OpenCodeClient(oc_url, timeout_s=timeout_s)
    wrapper = calls_on_postgres(client, sessions, timeout_s=timeout_s, keep_sessions=keep_sessions)
    _CLIENTS.extend([client, wrapper])
    return wrapper


def _call(run_id: str, repo: Path, prompt: str = "Add a docstring to calc.py") -> StructuredCall:
    return StructuredCall(run_id, "CompileST", 1, "plan", prompt, PLAN_OUTPUT_SCHEMA, str(repo))


def _claimed_by_a_dead_worker(
    db: Session, repo: Path, session_id: str | None = None
) -> StructuredCall:
    """A call of a new run, claimed in the ledger by a worker that never finishes it
    (``session_id``: the session it recorded before its prompt left, if it got there)."""
    run = RunFactory()
    call = _call(run.id, repo)
    OpenCodeCallFactory(
        run=run,
        op_key=call.op_key,
        status="claimed",
        request={"prompt": call.prompt},
        session_id=session_id,
    )
    db.commit()
    return call


def _prompts_at_server(oc_url: str) -> int:
    stats: dict[str, Any] = httpx.get(f"{oc_url}/__kodo/stats").json()
    count: int = stats["prompts"]
    return count


def _row(sessions: sessionmaker[Session], op_key: str) -> OpenCodeCall:
    with sessions() as s:
        return s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == op_key)).scalar_one()


@pytest.fixture(autouse=True)
def _reset_server(oc_url: str) -> None:
    httpx.post(f"{oc_url}/__kodo/reset")


def test_a_call_is_claimed_answered_and_recorded_with_usage(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    result = _wrapper(oc_url, sessions).prompt_structured(_call(run_id, repo))
    assert result.cache == "miss"
    assert set(result.answer) == {"design", "files", "risks", "tests"}
    row = _row(sessions, result.op_key)
    assert row.status == "succeeded"
    assert row.session_id
    assert row.session_id.startswith("ses_")
    assert row.duration_ms is not None
    assert row.duration_ms >= 0
    assert row.usage
    assert row.usage["total_tokens"] > 0
    assert row.usage["cost_usd"] > 0
    assert row.response
    assert row.response["usage"]["total_tokens"] == row.usage["total_tokens"]
    assert row.request["tools"]["bash"] is False
    assert row.request["tools"]["read"] is True


def test_a_repeated_op_key_is_served_from_l1_then_l2_without_reaching_the_server(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    first = _wrapper(oc_url, sessions)
    original = first.prompt_structured(_call(run_id, repo))
    again = first.prompt_structured(_call(run_id, repo))
    other_process = _wrapper(oc_url, sessions).prompt_structured(_call(run_id, repo))
    assert (again.cache, other_process.cache) == ("l1", "l2")
    assert again.answer == other_process.answer == original.answer
    assert _prompts_at_server(oc_url) == 1


def test_a_changed_prompt_for_a_claimed_attempt_is_refused_and_never_paid_twice(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    wrapper = _wrapper(oc_url, sessions)
    wrapper.prompt_structured(_call(run_id, repo, prompt="Add a docstring to calc.py"))
    changed = _call(run_id, repo, prompt="Add a docstring to calc.py, in other words")
    with pytest.raises(AttemptPromptChanged, match="ledger_attempt_unique") as refused:
        _wrapper(oc_url, sessions).prompt_structured(changed)
    assert "CompileST attempt 1" in str(refused.value)
    assert _prompts_at_server(oc_url) == 1, "the changed prompt never reached the server"
    with sessions() as s:
        rows = s.execute(select(OpenCodeCall.op_key).where(OpenCodeCall.run_id == run_id)).all()
    assert [r.op_key for r in rows] == [_call(run_id, repo).op_key]


def test_threads_racing_one_op_key_send_exactly_one_request(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Add a docstring to calc.py [oc:slow=300]")
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        wrapper = _wrapper(oc_url, sessions)  # a separate L1 each: only the ledger can dedupe
        barrier.wait()
        answers.append(wrapper.prompt_structured(call).answer)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 8
    assert all(a == answers[0] for a in answers)
    assert _prompts_at_server(oc_url) == 1


def test_an_answer_violating_the_schema_fails_closed_and_is_recorded(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Plan it [oc:invalid]")
    with pytest.raises(CallFailed, match="ContractViolation"):
        _wrapper(oc_url, sessions).prompt_structured(call)
    row = _row(sessions, call.op_key)
    assert row.status == "failed"
    assert row.error
    assert "ContractViolation" in row.error
    assert row.response is not None, "the invalid answer is kept as evidence"
    with pytest.raises(CallFailed):
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert _prompts_at_server(oc_url) == 1, "a failed op_key is never paid twice"


def test_the_runs_ledger_is_read_for_pages_without_its_bodies(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    """A page or ``/calls`` lists calls; a body (up to the answer cap, megabytes) is never
    loaded for it: reading one from such a listing raises instead of fetching it."""
    result = _wrapper(oc_url, sessions).prompt_structured(_call(run_id, repo))
    with sessions() as s:
        (listed,) = LedgerRepo(s).for_run(run_id)
        assert listed.op_key == result.op_key
        assert listed.usage == _row(sessions, result.op_key).usage
        with pytest.raises(InvalidRequestError, match="response"):
            _ = listed.response
        with pytest.raises(InvalidRequestError, match="request"):
            _ = listed.request


def test_a_tool_outside_the_agents_allowlist_fails_the_call(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Plan it [oc:tool=bash]")
    with pytest.raises(CallFailed, match="ToolNotAllowed"):
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert _row(sessions, call.op_key).status == "failed"


@pytest.mark.parametrize(
    ("directives", "confirmed"),
    [("", True), (" [oc:abort-fails=1]", False)],
    ids=["confirmed", "refused"],
)
def test_a_stalled_call_is_aborted_and_recorded_timed_out(
    oc_url: str,
    sessions: sessionmaker[Session],
    run_id: str,
    repo: Path,
    directives: str,
    confirmed: bool,
) -> None:
    """Blocking mode records the timeout at once, abort or not; when the daemon refused
    the abort its error says the turn may still be running (the row says where)."""
    call = _call(run_id, repo, f"Plan it [oc:slow=5000]{directives}")
    with pytest.raises(CallFailed) as failure:
        _wrapper(oc_url, sessions, timeout_s=0.5).prompt_structured(call)
    assert failure.value.status == "timed_out"
    row = _row(sessions, call.op_key)
    assert row.status == "timed_out"
    assert (row.error or "").endswith(ABORT_UNCONFIRMED) is not confirmed


def test_a_started_claim_left_by_a_dead_worker_becomes_unknown_and_is_not_resent(
    oc_url: str, sessions: sessionmaker[Session], db: Session, repo: Path
) -> None:
    call = _claimed_by_a_dead_worker(db, repo, session_id="ses_gone")
    with pytest.raises(OutcomeUnknown):
        _wrapper(oc_url, sessions, timeout_s=0.2).prompt_structured(call)
    assert _row(sessions, call.op_key).status == "unknown"
    assert _prompts_at_server(oc_url) == 0


def test_a_claim_a_dead_worker_left_before_its_session_fails_unsent_and_spends_nothing(
    oc_url: str, sessions: sessionmaker[Session], db: Session, repo: Path
) -> None:
    """No session recorded: its prompt never left. Settled at nothing, not held as
    ``unknown`` against the run's budget for good."""
    call = _claimed_by_a_dead_worker(db, repo)
    with pytest.raises(CallFailed) as failed:
        _wrapper(oc_url, sessions, timeout_s=0.2).prompt_structured(call)
    assert failed.value.error_name == "NeverSent"
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name, row.usage) == ("failed", "NeverSent", None)
    assert row.settled_at is not None
    assert (row.spent_usd_micro, row.spent_tokens) == (0, 0)
    assert _prompts_at_server(oc_url) == 0


def test_a_turn_that_read_files_then_answered_against_the_schema_is_billed_every_step(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    """The failure is recorded with what the whole turn cost (its session's totals), not
    with its last message's usage: a model cannot spend tokens and then fail to hide them."""
    call = _call(run_id, repo, "Plan it [oc:tool=read@calc.py] [oc:tool=read@calc.py] [oc:invalid]")
    with pytest.raises(CallFailed, match="ContractViolation") as failure:
        _wrapper(oc_url, sessions, keep_sessions=True).prompt_structured(call)
    row = _row(sessions, failure.value.op_key)
    assert row.session_id is not None
    with OpenCodeClient(oc_url, timeout_s=5) as client:
        session = client.get_session(row.session_id, directory=str(repo))
        last = client.last_message(row.session_id, directory=str(repo))
    assert row.usage is not None
    assert row.response is not None
    assert row.usage["input_tokens"] == session["tokens"]["input"]
    assert row.usage["cost_usd"] == pytest.approx(session["cost"])
    assert last is not None
    assert row.usage["input_tokens"] > last.info["tokens"]["input"], "more than the last step"


def test_usage_is_the_sessions_total_and_the_call_start_is_recorded(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    kept = _wrapper(oc_url, sessions, keep_sessions=True)
    result = kept.prompt_structured(_call(run_id, repo))
    row = _row(sessions, result.op_key)
    assert row.session_id is not None
    with OpenCodeClient(oc_url, timeout_s=5) as client:
        session = client.get_session(row.session_id, directory=str(repo))
    assert row.usage is not None
    assert row.usage["cost_usd"] == pytest.approx(session["cost"])
    assert row.usage["input_tokens"] == session["tokens"]["input"]
    assert row.started_at is not None
    assert row.finished_at is not None
    assert row.created_at <= row.started_at <= row.finished_at


def test_an_unknown_model_is_a_configuration_error_that_is_not_retried(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    client = OpenCodeClient(oc_url, timeout_s=5)
    _CLIENTS.append(client)
    wrapper = calls_on_postgres(
        client, sessions, timeout_s=5, model=ModelRef("kodo", "no-such-model")
    )
    call = _call(run_id, repo)
    with pytest.raises(CallFailed) as failure:
        wrapper.prompt_structured(call)
    assert failure.value.kind == "config"
    assert not failure.value.retryable
    assert "OC_MODEL_ID" in failure.value.error
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name) == ("failed", "OpenCodeConfigError")
    with sessions() as s:  # no answer is SQL NULL, so the triage query finds the row
        unanswered = s.execute(
            text("SELECT count(*) FROM app.opencode_calls WHERE op_key = :k AND response IS NULL"),
            {"k": call.op_key},
        ).scalar_one()
    assert unanswered == 1


def test_a_daemon_http_500_is_a_transient_failure_recorded_and_replayed_as_one(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Add a docstring to calc.py [oc:http500]")
    with pytest.raises(CallFailed) as failure:
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert (failure.value.kind, failure.value.retryable) == ("transient", True)
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name) == ("failed", "OpenCodeServerError")
    assert "HTTP 500 UnknownError" in (row.error or "")
    with pytest.raises(CallFailed) as replayed:  # a fresh worker reads the ledger, no resend
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert (replayed.value.kind, replayed.value.replayed) == ("transient", True)
    assert replayed.value.error == failure.value.error
    assert _prompts_at_server(oc_url) == 1


def test_secrets_in_a_prompt_never_reach_the_ledger(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    secret = "sk-live0123456789abcdefghijkl"  # noqa: S105 - a fake key the test must see redacted
    call = _call(run_id, repo, f"Rotate the key {secret} in calc.py")
    result = _wrapper(oc_url, sessions).prompt_structured(call)
    row = _row(sessions, result.op_key)
    assert secret not in json.dumps(row.request)
    assert secret not in json.dumps(row.response)
    assert "[REDACTED]" in row.request["prompt"]
    assert result.op_key == call.op_key, "the key is made from the real prompt"


def _race_in_process(oc_url: str, database_url: str, repo: str, run_id: str, queue: Any) -> None:
    from shared.db.engine import make_engine, make_session_factory

    engine = make_engine(database_url)
    wrapper = _wrapper(oc_url, make_session_factory(engine))
    call = _call(run_id, Path(repo), "Add a docstring to calc.py [oc:slow=300]")
    queue.put(wrapper.prompt_structured(call).answer)
    engine.dispose()


def test_processes_racing_one_op_key_send_exactly_one_request(
    oc_url: str, sessions: sessionmaker[Session], database_url: str, run_id: str, repo: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_race_in_process, args=(oc_url, database_url, str(repo), run_id, queue))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    answers = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert all(a == answers[0] for a in answers)
    assert _prompts_at_server(oc_url) == 1


def test_a_turn_that_spawned_a_child_session_fails_closed(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Plan it [oc:child]")
    with pytest.raises(CallFailed) as failure:
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert failure.value.error_name == "ChildSessionForbidden"
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name) == ("failed", "ChildSessionForbidden")


class _HourAhead(SystemClock):
    """The clock of a worker host an hour ahead of the one that claimed the call."""

    def now(self) -> datetime:
        return super().now() + timedelta(hours=1)


def test_a_live_claim_is_aged_by_the_databases_clock_not_a_skewed_workers(
    oc_url: str, sessions: sessionmaker[Session], db: Session, repo: Path
) -> None:
    call = _claimed_by_a_dead_worker(db, repo)
    client = OpenCodeClient(oc_url, timeout_s=10)
    wrapper = calls_on_postgres(client, sessions, timeout_s=10, clock=_HourAhead())
    _CLIENTS.extend([client, wrapper])
    outcome: list[BaseException] = []
    waiting = threading.Thread(target=_outcome_of, args=(wrapper, call, outcome), daemon=True)
    waiting.start()
    time.sleep(1.0)  # a skewed clock would have declared the fresh claim unknown at once
    assert _row(sessions, call.op_key).status == "claimed"
    with unit_of_work(sessions) as s:
        LedgerRepo(s).finish(
            call.op_key,
            status=CallStatus.FAILED,
            now=datetime.now(UTC),
            duration_ms=1,
            error_name="Stopped",
            error="finished by the live claimant",
        )
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert [type(e) for e in outcome] == [CallFailed], "the recorded failure, not unknown"
    assert _row(sessions, call.op_key).status == "failed"
    assert _prompts_at_server(oc_url) == 0


def _wait_until_sent(sessions: sessionmaker[Session], op_key: str) -> None:
    """Until the claimant has recorded its session: the prompt is on its way."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sessions() as s:
            sent = s.execute(
                select(OpenCodeCall.started_at).where(OpenCodeCall.op_key == op_key)
            ).scalar_one_or_none()
        if sent is not None:
            return
        time.sleep(0.02)
    raise AssertionError(f"call {op_key[:12]} was never sent")


def _impatient(oc_url: str, sessions: sessionmaker[Session]) -> ExactlyOnceCalls:
    """A second delivery that waits out a live claim for 0.1 s, then declares it unknown."""
    client = OpenCodeClient(oc_url, timeout_s=5)
    wrapper = calls_on_postgres(client, sessions, timeout_s=0.1, claim_grace_s=0.0)
    _CLIENTS.extend([client, wrapper])
    return wrapper


def _declared_unknown_while_in_flight(
    oc_url: str, sessions: sessionmaker[Session], call: StructuredCall
) -> list[BaseException]:
    """The claimant sends ``call``; a second delivery declares it unknown meanwhile;
    return what the claimant's prompt_structured raised once the late answer came."""
    outcome: list[BaseException] = []
    claimant = threading.Thread(
        target=_outcome_of, args=(_wrapper(oc_url, sessions), call, outcome), daemon=True
    )
    claimant.start()
    _wait_until_sent(sessions, call.op_key)
    with pytest.raises(OutcomeUnknown):
        _impatient(oc_url, sessions).prompt_structured(call)
    assert _row(sessions, call.op_key).status == "unknown"
    claimant.join(timeout=20)
    assert not claimant.is_alive()
    return outcome


def _outcome_of(wrapper: ExactlyOnceCalls, call: StructuredCall, into: list[BaseException]) -> None:
    try:
        wrapper.prompt_structured(call)
    except Exception as exc:  # any: the test asserts which one
        into.append(exc)


def test_a_call_answered_after_it_was_declared_unknown_is_recorded_succeeded_late_and_unused(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    with sessions() as s:
        before = s.execute(select(Run.status, Run.updated_at).where(Run.id == run_id)).one()
    call = _call(run_id, repo, "Add a docstring to calc.py [oc:slow=1500]")
    outcome = _declared_unknown_while_in_flight(oc_url, sessions, call)
    row = _row(sessions, call.op_key)
    assert row.status == "succeeded_late", "the paid answer is on the row, not lost"
    assert row.response is not None
    assert isinstance(row.response["structured"], dict)
    assert row.usage is not None
    assert row.usage["total_tokens"] > 0
    assert row.usage["cost_usd"] > 0
    assert (row.error_name, row.error) == (None, None)
    assert row.duration_ms is not None
    assert row.duration_ms >= 1000
    assert [type(e) for e in outcome] == [CallSuperseded], "the late answer is not used"
    with pytest.raises(OutcomeUnknown) as replayed:  # read back as what the run acted on
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert replayed.value.error == UNKNOWN_ERROR
    assert _prompts_at_server(oc_url) == 1
    with sessions() as s:
        after = s.execute(select(Run.status, Run.updated_at).where(Run.id == run_id)).one()
    assert after == before, "the late delivery did not move the run"


def test_a_call_failing_after_it_was_declared_unknown_is_recorded_failed_late(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    call = _call(run_id, repo, "Plan it [oc:slow=1500] [oc:invalid]")
    outcome = _declared_unknown_while_in_flight(oc_url, sessions, call)
    row = _row(sessions, call.op_key)
    assert (row.status, row.error_name) == ("failed_late", "ContractViolation")
    assert row.response is not None, "the invalid answer is kept as evidence"
    assert row.usage is not None
    assert row.usage["total_tokens"] > 0
    assert [type(e) for e in outcome] == [CallSuperseded], "no retry from the late delivery"
    with pytest.raises(OutcomeUnknown) as replayed:
        _wrapper(oc_url, sessions).prompt_structured(call)
    assert replayed.value.error == UNKNOWN_ERROR


def test_an_overdue_async_call_whose_abort_the_daemon_refused_is_aborted_again(
    oc_url: str, sessions: sessionmaker[Session], run_id: str, repo: Path
) -> None:
    """Over HTTP, on the real ledger: the daemon answers the first abort 500 and the turn
    keeps running; the call stays ``sent`` (parked) until the next try stops it."""
    call = _call(run_id, repo, "Plan it [oc:slow=20000] [oc:abort-fails=1]")
    client = OpenCodeClient(oc_url, timeout_s=10.0)
    ledger = PostgresCallLedger(sessions)
    wrapper = ExactlyOnceCalls(
        client, ledger, SystemClock(), model=SCRIPTED, timeout_s=0.3, async_calls=True
    )
    _CLIENTS.extend([client, wrapper])
    with pytest.raises(CallPending) as sent:
        wrapper.prompt_structured(call)
    assert ledger.mark_sent(call.op_key)  # what the step's park records
    time.sleep(0.4)  # past the call's deadline

    with pytest.raises(CallPending) as retry:
        wrapper.prompt_structured(call)
    assert (retry.value.session_id, retry.value.hold_s) == (sent.value.session_id, ABORT_RETRY_S)
    assert _row(sessions, call.op_key).status == "sent"
    busy = httpx.get(f"{oc_url}/session/status", params={"directory": str(repo)}).json()
    assert sent.value.session_id in busy  # the refused abort stopped nothing

    with pytest.raises(CallFailed) as failure:
        wrapper.prompt_structured(call)
    assert failure.value.status == "timed_out"
    assert "never confirmed" not in (_row(sessions, call.op_key).error or "")
    stats = httpx.get(f"{oc_url}/__kodo/stats").json()
    assert stats["aborts"] == 2
