"""Webhooks on real Postgres against a real HTTP receiver on a loopback port.

The outbox row commits with the run's move; the sender signs and posts it; a receiver
that is down gets it once it is back; every attempt is recorded; a sender that died
mid-request leaves the delivery due again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from celery import Celery
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.worker.webhooks import (
    SEND_WEBHOOKS,
    send_after_commit,
    send_webhooks,
    sweep_webhooks,
)
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.engine import unit_of_work
from shared.db.models import Intent, Run, WebhookDelivery
from shared.domain.run_machine import (
    BudgetExhausted,
    RunStatus,
    StepId,
    StepSucceeded,
    Transition,
    transition,
)
from shared.domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    endpoint,
    verify,
)
from shared.service.webhooks import (
    claim_due,
    list_deliveries,
    queued_deliveries,
    record_run_event,
    webhook_attempts,
)
from tests.factories import RunFactory
from tests.integration.service.webhook_receiver import (
    Answer,
    Receiver,
    receiver_on_free_port,
    serving,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "receiver-shared-secret"  # noqa: S105 - a test key
WAITING = transition(RunStatus.COMPILING, StepSucceeded(StepId.COMPILE))


@dataclass
class Ports:
    settings: Settings
    clock: FixedClock
    sessions: sessionmaker[Session]


def ports_for(receiver: Receiver, sessions: sessionmaker[Session], **settings: object) -> Ports:
    configured = replace(
        Settings(),
        webhook=endpoint(receiver.url, SECRET, "global"),
        webhook_timeout_s=2.0,
        webhook_backoff_s=10.0,
        webhook_max_attempts=3,
        public_url="https://kodo.example",
        random_seed=7,
    )
    return Ports(replace(configured, **settings), FixedClock(NOW), sessions)


def waiting_run(db: Session, move: Transition = WAITING) -> tuple[Run, str]:
    """A run that just moved by ``move``, and the delivery its transaction added."""
    run: Run = RunFactory(status=move.to_status.value, next_action=move.next_action.value)
    db.commit()
    delivery = record_run_event(db, run.id, move, NOW)
    assert delivery is not None
    db.commit()
    return run, delivery


def verified(receiver: Receiver, clock: FixedClock) -> list[dict[str, object]]:
    """Every body the receiver got, each checked as a receiver must."""
    bodies = []
    for got in receiver.got:
        verify(SECRET, got.headers[SIGNATURE_HEADER], got.body, now=int(clock.now().timestamp()))
        bodies.append(json.loads(got.body))
    return bodies


def test_a_run_event_reaches_a_live_receiver_signed_with_its_delivery_id(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run, delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    ports = ports_for(receiver, sessions)

    with serving(receiver):
        done = send_webhooks(ports)

    assert [(d.delivery_id, d.outcome) for d in done] == [(delivery, "delivered")]
    [body] = verified(receiver, ports.clock)
    [got] = receiver.got
    assert (got.headers[EVENT_HEADER], got.headers[DELIVERY_HEADER]) == ("waiting_input", delivery)
    assert got.headers["Content-Type"] == "application/json"
    assert body["id"] == delivery
    assert body["event"] == "waiting_input"
    assert body["run"] == {
        "id": run.id,
        "status": "waiting_input",
        "nextAction": "await:approval",
        "lastStep": "CompileST",
        "repo": "/srv/repos/sample",
        "goal": db.get(Intent, run.intent_id).goal,
        "submittedBy": "tests",
        "baseCommit": None,
        "planSha256": None,
    }
    assert body["links"] == {
        "run": f"https://kodo.example/runs/{run.id}",
        "page": f"https://kodo.example/ui/runs/{run.id}",
    }
    [attempt] = webhook_attempts(db, run.id)
    assert (attempt.attempt, attempt.status_code, attempt.outcome, attempt.error) == (
        1,
        204,
        "delivered",
        None,
    )
    assert attempt.target == f"global http://127.0.0.1:{receiver.port}"
    assert attempt.next_attempt_at is None
    assert send_webhooks(ports) == [], "a delivered event is not sent again"


def test_a_receiver_that_is_down_gets_the_delivery_once_when_it_comes_back(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run, delivery = waiting_run(db)
    receiver = receiver_on_free_port()  # nothing listens yet: connection refused
    ports = ports_for(receiver, sessions)

    [first] = send_webhooks(ports)
    assert first.outcome == "retry"
    [refused] = webhook_attempts(db, run.id)
    assert refused.status_code is None
    assert str(refused.error).startswith("ConnectError")
    assert refused.next_attempt_at is not None
    wait_s = (refused.next_attempt_at - NOW).total_seconds()
    assert 5.0 <= wait_s <= 10.0, "the first retry waits half to all of the base backoff"
    assert send_webhooks(ports) == [], "not due before its time"

    ports.clock.advance(wait_s)
    with serving(receiver):
        [second] = send_webhooks(ports)

    assert second.outcome == "delivered"
    [body] = verified(receiver, ports.clock)
    assert body["id"] == delivery
    assert [(a.attempt, a.outcome) for a in webhook_attempts(db, run.id)] == [
        (1, "retry"),
        (2, "delivered"),
    ]
    [shown] = list_deliveries(db, run_id=run.id)
    assert (shown.status, shown.attempts, shown.next_attempt_at) == ("delivered", 2, None)


def test_the_retry_schedule_is_the_seeds_and_differs_between_deliveries(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    receiver = receiver_on_free_port()  # down throughout
    schedules = []
    for _ in range(2):
        run, _delivery = waiting_run(db)
        send_webhooks(ports_for(receiver, sessions))
        [attempt] = webhook_attempts(db, run.id)
        schedules.append(attempt.next_attempt_at)
    assert schedules[0] != schedules[1], "jitter is drawn per delivery"


def test_a_receiver_that_keeps_failing_is_given_up_on_after_the_last_attempt(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run, delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    receiver.answer = Answer(status=500)
    ports = ports_for(receiver, sessions, webhook_max_attempts=2)

    with serving(receiver):
        assert [d.outcome for d in send_webhooks(ports)] == ["retry"]
        ports.clock.advance(3600)
        assert [d.outcome for d in send_webhooks(ports)] == ["gave_up"]
        ports.clock.advance(3600)
        assert send_webhooks(ports) == []

    assert {got.headers[DELIVERY_HEADER] for got in receiver.got} == {delivery}
    assert len(receiver.got) == 2
    [shown] = list_deliveries(db, run_id=run.id)
    assert (shown.status, shown.attempts) == ("failed", 2)
    assert shown.error == "gave up after 2 attempts: answered HTTP 500"
    assert [(t.status_code, t.outcome) for t in shown.tries] == [(500, "retry"), (500, "gave_up")]


def test_a_redirect_is_not_followed(db: Session, sessions: sessionmaker[Session]) -> None:
    run, _delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    receiver.answer = Answer(status=307, location="/elsewhere")

    with serving(receiver):
        [done] = send_webhooks(ports_for(receiver, sessions))

    assert done.outcome == "retry"
    assert [got.path for got in receiver.got] == ["/hooks/kodo"]
    [attempt] = webhook_attempts(db, run.id)
    assert (attempt.status_code, attempt.error) == (307, "answered HTTP 307")


def test_a_receiver_slower_than_the_timeout_is_an_attempt_that_timed_out(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run, _delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    receiver.answer = Answer(delay_s=1.5)

    with serving(receiver):
        send_webhooks(ports_for(receiver, sessions, webhook_timeout_s=0.3))

    [attempt] = webhook_attempts(db, run.id)
    assert attempt.outcome == "retry"
    assert str(attempt.error).startswith("ReadTimeout")


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout_as_a_whole(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """A byte every 50 ms beats any read timeout; the attempt still ends within its
    timeout (the whole exchange), recorded timed out, and the thread goes free."""
    run, _delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    receiver.answer = Answer(trickle_s=0.05)  # 38 bytes: about 2 s to answer in full

    with serving(receiver):
        send_webhooks(ports_for(receiver, sessions, webhook_timeout_s=0.5))
        wait_until(lambda: receiver.cut_off, 10, "the sender to hang up")

    [attempt] = webhook_attempts(db, run.id)
    assert attempt.outcome == "retry"
    assert attempt.status_code is None, "no whole answer came within the timeout"
    assert str(attempt.error).startswith("ReadTimeout"), attempt.error
    assert receiver.cut_off[0] < 38, "cut off before the answer's end"


def test_a_sender_that_died_mid_request_leaves_the_delivery_due_when_its_hold_ends(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    _run, delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    ports = ports_for(receiver, sessions)
    with unit_of_work(sessions) as s:  # claimed, then the sender's process is killed
        claimed = claim_due(s, NOW, hold_s=60)
    assert claimed is not None
    assert claimed.id == delivery

    with serving(receiver):
        assert send_webhooks(ports) == [], "held by the dead sender's claim"
        ports.clock.advance(61)
        [done] = send_webhooks(ports)

    assert done.outcome == "delivered"
    assert [body["id"] for body in verified(receiver, ports.clock)] == [delivery]


def test_a_budget_stop_is_its_own_event(db: Session, sessions: sessionmaker[Session]) -> None:
    _run, _delivery = waiting_run(
        db, transition(RunStatus.APPLYING, BudgetExhausted(StepId.APPLY_PATCH))
    )
    receiver = receiver_on_free_port()
    with serving(receiver):
        send_webhooks(ports_for(receiver, sessions))
    [got] = receiver.got
    assert got.headers[EVENT_HEADER] == "budget"
    assert json.loads(got.body)["run"]["nextAction"] == "await:budget"


def test_the_outbox_row_rolls_back_with_the_move(db: Session) -> None:
    run: Run = RunFactory(waiting_input=True)
    db.commit()
    assert record_run_event(db, run.id, WAITING, NOW) is not None
    db.rollback()
    assert db.execute(select(func.count()).select_from(WebhookDelivery)).scalar_one() == 0
    moved = transition(RunStatus.APPLYING, StepSucceeded(StepId.APPLY_PATCH))
    assert record_run_event(db, run.id, moved, NOW) is None, "a move between steps is quiet"


def test_without_any_webhook_the_sweep_records_due_deliveries_skipped(
    db: Session, sessions: sessionmaker[Session], redis_url: str
) -> None:
    run, _delivery = waiting_run(db)
    ports = Ports(Settings(), FixedClock(NOW), sessions)
    broker = redis_url.rsplit("/", 1)[0] + "/11"
    client = Redis.from_url(broker)
    client.flushdb()
    celery = Celery("webhooks-unconfigured", broker=broker, set_as_current=False)
    try:
        assert sweep_webhooks(ports, celery) is False
    finally:
        celery.close()
    assert client.llen("kodo") == 0, "nothing to send: no task is queued"
    client.close()

    [shown] = list_deliveries(db, run_id=run.id)
    assert shown.status == "skipped"
    assert "KODO_WEBHOOK_URL" in str(shown.error)
    assert webhook_attempts(db, run.id) == []


def test_a_repository_without_its_own_webhook_or_a_global_one_is_skipped_by_the_sender(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run, _delivery = waiting_run(db)
    other = endpoint("http://127.0.0.1:9/elsewhere", SECRET, "repository")
    ports = Ports(
        replace(Settings(), repository_webhooks=(("/srv/repos/other", other),)),
        FixedClock(NOW),
        sessions,
    )
    [done] = send_webhooks(ports)
    assert done.outcome == "skipped"
    assert list_deliveries(db, run_id=run.id)[0].status == "skipped"


def test_a_committed_event_is_sent_to_the_broker_after_commit_and_a_rolled_back_one_is_not(
    db: Session, sessions: sessionmaker[Session], redis_url: str
) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/9"
    client = Redis.from_url(broker)
    client.flushdb()
    celery = Celery("webhooks-test", broker=broker, set_as_current=False)
    run: Run = RunFactory(waiting_input=True)
    db.commit()
    configured = replace(Settings(), webhook=endpoint("http://127.0.0.1:9/h", SECRET, "global"))
    remove = send_after_commit(celery, configured)
    try:
        with unit_of_work(sessions) as s:
            record_run_event(s, run.id, WAITING, NOW)
        rolled_back = sessions()
        with rolled_back.begin():
            record_run_event(rolled_back, run.id, WAITING, NOW)
            rolled_back.rollback()
        assert queued_deliveries(rolled_back) == []
        rolled_back.close()
    finally:
        remove()
        celery.close()
    messages = [json.loads(m) for m in client.lrange("kodo", 0, -1)]
    client.close()
    [committed] = list_deliveries(db, run_id=run.id)
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        (SEND_WEBHOOKS, repr([[committed.id]]))
    ]


def test_the_sweep_asks_a_worker_to_send_when_a_delivery_is_due(
    db: Session, sessions: sessionmaker[Session], redis_url: str
) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/10"
    client = Redis.from_url(broker)
    client.flushdb()
    celery = Celery("webhooks-sweep", broker=broker, set_as_current=False)
    receiver = receiver_on_free_port()
    ports = ports_for(receiver, sessions)
    try:
        assert sweep_webhooks(ports, celery) is False, "nothing is due yet"
        waiting_run(db)
        assert sweep_webhooks(ports, celery) is True
    finally:
        celery.close()
    messages = [json.loads(m) for m in client.lrange("kodo", 0, -1)]
    client.close()
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        (SEND_WEBHOOKS, "[None]")
    ]


def test_a_huge_answer_is_not_read_past_the_cap(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    _run, _delivery = waiting_run(db)
    receiver = receiver_on_free_port()
    receiver.answer = Answer(status=200, body=b"x" * (64 << 20))

    with serving(receiver):
        [done] = send_webhooks(ports_for(receiver, sessions))
        [written] = wait_until(lambda: receiver.cut_off, 10, "the sender to hang up")

    assert done.outcome == "delivered"
    assert written < 64 << 20, "the sender hung up long before the answer's end"
