"""``GET /runs/<id>/events``: the run's state as server-sent events, fed by LISTEN/NOTIFY.

Changes are committed from another session, exactly as a worker would: the trigger
notifies, the API's listener wakes the stream, the stream re-reads the row.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, text, update
from sqlalchemy.event import listen, remove
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from services.api import events
from services.api.auth import credential_still_live
from services.api.events import hub_of, stream
from services.api.state import state_of
from shared.db import events as shared_events
from shared.db.events import RunEvent, RunEventHub, conninfo_of, parse_payload
from shared.db.models import Run
from shared.service.tokens import Role, revoke_token
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory
from tests.integration.api.conftest import issue_token

pytestmark = pytest.mark.integration


FIRST = {
    "runId": "r1",
    "status": "applying",
    "lastStep": "ApplyPatchST",
    "nextAction": "a",
    "seq": 7,
}
SUCCEEDED = {"runId": "r1", "status": "succeeded", "lastStep": "ExecuteST", "nextAction": "none"}


class Sse:
    """Reads one streamed response frame by frame (each a blank-line-terminated block)."""

    def __init__(self, response: TestResponse) -> None:
        self.response = response
        self.chunks = response.iter_encoded()
        self.buffer = ""

    def next_frame(self) -> str:
        while "\n\n" not in self.buffer:
            self.buffer += next(self.chunks).decode()
        frame, self.buffer = self.buffer.split("\n\n", 1)
        return frame

    def next_event(self) -> dict[str, Any]:
        """The next ``run`` event; its ``id:`` must be the ``seq`` it carries."""
        frame = self.next_frame()
        if frame.startswith("retry: "):  # the stream's first block: the reconnect delay
            frame = self.next_frame()
        lines = frame.split("\n")
        assert lines[0].startswith("id: "), frame
        assert lines[1] == "event: run", frame
        assert lines[2].startswith("data: "), frame
        data: dict[str, Any] = json.loads(lines[2].removeprefix("data: "))
        assert lines[0] == f"id: {data['seq']}", frame
        return data

    def ended(self) -> bool:
        if self.buffer:
            return False
        try:
            self.buffer += next(self.chunks).decode()
        except StopIteration:
            return True
        return False


def open_stream(client: FlaskClient, url: str, last_event_id: str | None = None) -> Sse:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    response = client.get(url, buffered=False, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    return Sse(response)


def move(sessions: sessionmaker[Session], run_id: str, status: str, step: str | None) -> None:
    """Commit a status change in a transaction of its own (another actor, as a worker is)."""
    with sessions() as s, s.begin():
        s.execute(update(Run).where(Run.id == run_id).values(status=status, last_step=step))


def test_the_first_event_is_the_current_state_of_the_run(client: FlaskClient, db: Session) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    sse = open_stream(client, f"/runs/{run.id}/events")

    assert sse.next_event() == {
        "runId": run.id,
        "status": "waiting_input",
        "lastStep": "CompileST",
        "nextAction": "await:approval",
        "seq": 1,
    }
    sse.response.close()


def test_a_change_committed_elsewhere_arrives_as_the_next_event(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    assert sse.next_event()["status"] == "compiling"

    move(sessions, run.id, "waiting_input", "CompileST")

    assert sse.next_event()["status"] == "waiting_input"
    move(sessions, run.id, "applying", "ApplyPatchST")
    assert sse.next_event()["lastStep"] == "ApplyPatchST"
    sse.response.close()


def test_the_stream_ends_after_a_terminal_status(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(status="executing", last_step="ExecuteST")
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    assert sse.next_event()["status"] == "executing"

    move(sessions, run.id, "succeeded", "ExecuteST")

    assert sse.next_event()["status"] == "succeeded"
    assert sse.ended()


def test_a_run_already_finished_gets_one_event_and_the_end(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(succeeded=True)
    db.commit()

    sse = open_stream(client, f"/runs/{run.id}/events")

    assert sse.next_event()["status"] == "succeeded"
    assert sse.ended()


def test_until_ends_the_stream_at_one_of_the_named_statuses(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events?until=waiting_input,deciding")
    assert sse.next_event()["status"] == "compiling"

    move(sessions, run.id, "waiting_input", "CompileST")

    assert sse.next_event()["status"] == "waiting_input"
    assert sse.ended()


def test_until_a_status_the_run_is_already_in_ends_after_the_first_event(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()

    sse = open_stream(client, f"/runs/{run.id}/events?until=waiting_input")

    assert sse.next_event()["status"] == "waiting_input"
    assert sse.ended()


def test_an_unknown_run_is_a_json_404_and_holds_no_subscription(
    app: Flask, client: FlaskClient
) -> None:
    response = client.get("/runs/no-such-run/events")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    with app.app_context():
        assert hub_of(app).subscriber_count() == 0


def test_an_unknown_status_in_until_is_a_400(client: FlaskClient, db: Session) -> None:
    run = RunFactory()
    db.commit()

    response = client.get(f"/runs/{run.id}/events?until=waiting_input,nonsense")

    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"until": ["unknown status 'nonsense'"]}


def test_a_quiet_stream_sends_keepalive_comments(
    client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.05)
    run = RunFactory(waiting_input=True)
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    sse.next_event()

    assert sse.next_frame() == ": keepalive"
    sse.response.close()


def move_unannounced(sessions: sessionmaker[Session], run_id: str, status: str, step: str) -> None:
    """A change whose notification never arrives: committed with the run's triggers off
    (the replica role), its ``event_seq`` moved by hand as the counting trigger would."""
    with sessions() as s, s.begin():
        s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, last_step=step, event_seq=Run.event_seq + 1)
        )


def test_a_quiet_stream_reads_nothing_at_its_keepalives() -> None:
    """A thousand quiet watchers cost the database nothing per beat: the hub's sweep is
    the safety net for a lost notification, one statement for all of them."""
    hub = RunEventHub("postgresql://unused")
    sub = hub.subscribe("r1")
    reads: list[str] = []

    def read() -> dict[str, Any]:
        reads.append("read")
        return FIRST

    body = stream(sub, FIRST, read, frozenset(), keepalive_s=0.01)
    next(body), next(body)  # the retry block, the first state

    assert [next(body) for _ in range(3)] == [": keepalive\n\n"] * 3
    assert reads == []
    assert sub.latest == FIRST["seq"], "the hub knows which state the stream has"


def test_the_hubs_sweep_tells_a_subscriber_behind_its_run_to_re_read(
    database_url: str, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(status="applying", last_step="ApplyPatchST")
    db.commit()
    seq = db.scalar(select(Run.event_seq).where(Run.id == run.id))
    assert seq is not None
    hub = RunEventHub(conninfo_of(database_url), poll_s=0.02, sweep_s=0.05)
    hub.start()
    try:
        behind, current, gone = hub.subscribe(run.id), hub.subscribe(run.id), hub.subscribe("x")
        behind.saw(seq)
        move_unannounced(sessions, run.id, "deciding", "DecideST")
        current.saw(seq + 1)
        gone.saw(1)

        assert behind.wait(5).resync, "a notification it never got: re-read"
        assert gone.wait(5).resync, "its run is gone: re-read (and end)"
        current.wait(0.2)  # what a sweep sent before it said which state it has
        assert not current.wait(0.3).changed, "a subscriber with the row's state is left alone"
    finally:
        hub.close()


def test_no_notification_is_lost_to_the_sweeps_statements(
    database_url: str, db: Session, sessions: sessionmaker[Session]
) -> None:
    """The sweep runs a statement on the listening connection: notifications that arrive
    meanwhile are still handed out, every one, in commit order."""
    run = RunFactory(status="applying", last_step="ApplyPatchST")
    db.commit()
    seq = db.scalar(select(Run.event_seq).where(Run.id == run.id))
    assert seq is not None
    hub = RunEventHub(conninfo_of(database_url), poll_s=0.001, sweep_s=0.0)  # a sweep a poll
    hub.start()
    try:
        sub = hub.subscribe(run.id)
        sub.saw(seq)
        for n in range(30):
            move(sessions, run.id, ("deciding", "applying")[n % 2], "DecideST")
        seen: list[int] = []
        deadline = time.monotonic() + 10
        while len(seen) < 30 and time.monotonic() < deadline:
            woke = sub.wait(0.5)  # the sweeps' re-read marks come too: only events count
            seen.extend(e.seq for e in woke.events if e.seq is not None)
    finally:
        hub.close()

    assert seen == list(range(seq + 1, seq + 31))


def test_a_listener_that_fails_unexpectedly_reconnects_and_tells_its_subscribers(
    database_url: str, db: Session, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a lost connection: any failure of the listening thread (a bug) ends in
    a reconnect, never in a hub that still says it listens while nothing arrives."""
    run = RunFactory(status="applying", last_step="ApplyPatchST")
    db.commit()
    failed: list[str] = []

    def parse_once_broken(payload: str) -> RunEvent | None:
        if not failed:
            failed.append(payload)
            raise ValueError("a parser bug")
        return parse_payload(payload)

    monkeypatch.setattr(shared_events, "parse_payload", parse_once_broken)
    hub = RunEventHub(conninfo_of(database_url), poll_s=0.02, reconnect_s=0.05)
    hub.start()
    try:
        sub = hub.subscribe(run.id)
        move(sessions, run.id, "deciding", "DecideST")  # its notification breaks the thread
        assert sub.wait(5).resync, "reconnected: the subscriber is told to re-read"
        assert failed, "the failure happened"
        move(sessions, run.id, "executing", "ExecuteST")
        woke = sub.wait(5)
        assert [e.status for e in woke.events] == ["executing"], "and events flow again"
    finally:
        hub.close()


def test_a_change_whose_notification_was_lost_still_reaches_the_stream(
    client: FlaskClient,
    db: Session,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.05)  # the hub sweeps at the same beat
    run = RunFactory(status="applying", last_step="ApplyPatchST")
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    first = sse.next_event()

    move_unannounced(sessions, run.id, "deciding", "DecideST")
    frame = sse.next_frame()
    while frame == ": keepalive":
        frame = sse.next_frame()

    data = json.loads(frame.split("\n")[2].removeprefix("data: "))
    assert (data["status"], data["seq"]) == ("deciding", first["seq"] + 1)
    sse.response.close()


def test_closing_the_stream_releases_its_subscription(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    sse.next_event()
    with app.app_context():
        assert hub_of(app).subscriber_count() == 1

    sse.response.close()

    with app.app_context():
        assert hub_of(app).subscriber_count() == 0


def test_payloads_that_are_not_the_triggers_shape_are_ignored() -> None:
    assert parse_payload('{"run_id": "r", "status": "applying", "last_step": null}') is not None
    assert parse_payload("not json") is None
    assert parse_payload('["r", "applying"]') is None
    assert parse_payload('{"run_id": 1, "status": "applying"}') is None


def test_a_burst_of_changes_arrives_as_every_state_in_commit_order(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory(status="applying", last_step="ApplyPatchST")
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    assert sse.next_event()["status"] == "applying"

    move(sessions, run.id, "deciding", "DecideST")  # both commit before the stream reads
    move(sessions, run.id, "executing", "ExecuteST")
    move(sessions, run.id, "succeeded", "ExecuteST")

    assert [sse.next_event()["status"] for _ in range(3)] == ["deciding", "executing", "succeeded"]
    assert sse.ended()


def test_complete_notifications_are_forwarded_without_reading_the_row() -> None:
    hub = RunEventHub("postgresql://unused")  # never started: events are delivered by hand
    sub = hub.subscribe("r1")
    reads: list[str] = []

    def read() -> dict[str, Any]:
        reads.append("read")
        return {"runId": "r1", "status": "deciding", "lastStep": "DecideST", "nextAction": "x"}

    body = stream(sub, FIRST, read, frozenset(), keepalive_s=5)
    assert next(body) == f"retry: {events.RETRY_MS}\n\n"
    assert "applying" in next(body)
    sub.deliver(RunEvent("r1", "deciding", "DecideST", "run:DecideST", 8))
    sub.deliver(RunEvent("r1", "succeeded", "ExecuteST", "none", 9))

    frames = list(body)

    assert ['"deciding"' in frames[0], '"succeeded"' in frames[1]] == [True, True]
    assert [f.split("\n")[0] for f in frames] == ["id: 8", "id: 9"]
    assert reads == [], "a complete payload is the committed state: no re-read"


def test_a_reconnect_or_a_payload_without_next_action_falls_back_to_one_read() -> None:
    hub = RunEventHub("postgresql://unused")
    sub = hub.subscribe("r1")
    reads: list[str] = []

    def read() -> dict[str, Any]:
        reads.append("read")
        return {**SUCCEEDED, "seq": 9}

    body = stream(sub, FIRST, read, frozenset(), keepalive_s=5)
    next(body), next(body)  # the retry block, the first state
    sub.deliver(RunEvent("r1", "succeeded", "ExecuteST"))  # an older trigger's payload

    assert ['"succeeded"' in f for f in body] == [True]
    assert reads == ["read"]


def test_a_draining_hub_ends_every_stream_and_every_later_one_without_a_read() -> None:
    """A process shutting down ends its streams at once; the clients resume elsewhere."""
    hub = RunEventHub("postgresql://unused")
    open_sub = hub.subscribe("r1")
    reads: list[str] = []

    def read() -> dict[str, Any]:
        reads.append("read")
        return {**SUCCEEDED, "seq": 9}

    body = stream(open_sub, FIRST, read, frozenset(), keepalive_s=5)
    next(body), next(body)  # the retry block, the first state

    hub.drain()

    assert list(body) == [], "ended, with nothing more sent"
    later = hub.subscribe("r2")
    assert later.wait(5).closing, "a stream opened while draining ends at its first wait"
    assert reads == []
    assert hub.subscriber_count() == 1  # the ended stream let go of its subscription


def test_a_stream_is_renewed_after_its_longest_life_and_lets_go_of_its_subscription() -> None:
    """KODO_SSE_MAX_S: a client that stopped reading without closing held its stream
    (and its token's slot) for hours, its keepalives swallowed by the kernels' buffers.
    The stream says ``event: reconnect`` and ends; the client resumes, losing nothing."""
    hub = RunEventHub("postgresql://unused")
    sub = hub.subscribe("r1")
    now = [100.0]
    body = stream(
        sub, FIRST, lambda: FIRST, frozenset(), keepalive_s=0.01, clock=lambda: now[0], max_s=60
    )
    next(body), next(body)  # the retry block, the first state
    assert next(body) == ": keepalive\n\n", "alive before its time"
    now[0] += 60

    assert list(body) == [events.RENEW]
    assert events.RENEW.startswith("event: reconnect\n")
    assert hub.subscriber_count() == 0, "its subscription let go"


def test_a_re_read_the_exhausted_pool_refuses_is_owed_not_the_end_of_the_stream() -> None:
    """The keepalive or resync re-read meets the pool's timeout: the stream stays open and
    reads on its next wake-up, so the change the lost notification carried still arrives."""
    hub = RunEventHub("postgresql://unused")
    sub = hub.subscribe("r1")
    reads: list[str] = []

    def read() -> dict[str, Any]:
        reads.append("read")
        if len(reads) == 1:
            raise PoolTimeout("QueuePool limit of size 1 overflow 0 reached")
        return {**SUCCEEDED, "seq": 9}

    body = stream(sub, FIRST, read, frozenset(), keepalive_s=0.05)
    next(body), next(body)  # the retry block, the first state
    sub.deliver(RunEvent("r1", "succeeded", "ExecuteST"))  # partial: needs a read

    frames = list(body)

    assert frames[-1].startswith("id: 9\nevent: run")
    assert '"succeeded"' in frames[-1]
    assert reads == ["read", "read"]


def test_each_state_change_has_the_next_id_counted_by_the_database(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    assert sse.next_event()["seq"] == 1

    with sessions() as s, s.begin():  # no public field changes: no new id
        s.execute(update(Run).where(Run.id == run.id).values(retry_count=3, event_seq=40))
    move(sessions, run.id, "waiting_input", "CompileST")
    move(sessions, run.id, "compiling", "CompileST")  # request changes: back again
    move(sessions, run.id, "waiting_input", "CompileST")

    assert [sse.next_event()["seq"] for _ in range(3)] == [2, 3, 4]
    sse.response.close()


def test_a_client_resuming_at_the_current_state_is_not_sent_it_again(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    move(sessions, run.id, "waiting_input", "CompileST")  # seq 2

    sse = open_stream(client, f"/runs/{run.id}/events", last_event_id="2")
    assert sse.next_frame() == f"retry: {events.RETRY_MS}"
    move(sessions, run.id, "applying", "ApplyPatchST")

    assert sse.next_event()["status"] == "applying"  # the first event is the next change
    sse.response.close()


def test_a_client_resuming_after_changes_gets_the_current_state(
    client: FlaskClient, db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    move(sessions, run.id, "waiting_input", "CompileST")  # seq 2: the client saw this
    move(sessions, run.id, "compiling", "CompileST")
    move(sessions, run.id, "waiting_input", "CompileST")  # same fields, a new plan: seq 4

    sse = open_stream(client, f"/runs/{run.id}/events", last_event_id="2")

    assert sse.next_event() == {
        "runId": run.id,
        "status": "waiting_input",
        "lastStep": "CompileST",
        "nextAction": run.next_action,
        "seq": 4,
    }
    sse.response.close()


@pytest.mark.parametrize("last", ["abc", "-1", "1e3", "9" * 19])
def test_a_last_event_id_this_stream_never_sent_is_a_400(
    client: FlaskClient, db: Session, last: str
) -> None:
    run = RunFactory()
    db.commit()

    response = client.get(f"/runs/{run.id}/events", headers={"Last-Event-ID": last})

    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"Last-Event-ID": ["not an event id"]}


def test_revoking_the_token_ends_its_open_streams_within_a_keepalive(
    client: FlaskClient,
    db: Session,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revoking a token ends its power at once for requests; a stream opened before is
    told so and ended at its next keepalive beat, not left following the run."""
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.05)
    run = RunFactory(waiting_input=True)
    db.commit()
    sse = open_stream(client, f"/runs/{run.id}/events")
    sse.next_event()
    assert sse.next_frame() == ": keepalive", "live while the token is"

    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "ann", now=datetime.now(UTC))
    frames = []
    while not sse.ended():
        frames.append(sse.next_frame())

    assert frames[-1] == 'event: error\ndata: {"error": "credential_revoked"}', frames
    assert set(frames[:-1]) <= {": keepalive"}, "nothing of the run after the revocation"


def test_streams_of_one_token_share_its_liveness_check_for_a_beat(
    app: Flask, sessions: sessionmaker[Session]
) -> None:
    """A thousand watchers of one token cost one read per keepalive, not a thousand."""
    token = issue_token(sessions, "watch-many", Role.APPROVER)
    reads: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        if "api_tokens" in statement:
            reads.append(statement)

    headers = {"Authorization": f"Bearer {token}"}
    with app.test_request_context("/runs/x/events", headers=headers):
        checks = [credential_still_live(ttl_s=60) for _ in range(50)]
    listen(Engine, "before_cursor_execute", seen)
    try:
        with app.app_context():
            answers = [check() for check in checks]
    finally:
        remove(Engine, "before_cursor_execute", seen)

    assert answers == [True] * 50
    assert len(reads) == 1


def test_closing_the_apps_state_stops_its_event_listener(app: Flask) -> None:
    """The hub's LISTEN thread lives as long as the app: closing the app's state stops it
    (a process that built and dropped apps kept their threads reconnecting forever)."""
    with app.app_context():
        hub = hub_of(app)
    listener = hub._thread
    assert listener is not None
    assert listener.is_alive()

    state_of(app).close()

    assert not listener.is_alive()
    assert events.HUB_EXTENSION not in app.extensions


def test_a_stream_is_renewed_at_its_time_not_at_the_keepalive_after_it() -> None:
    """The wait before a keepalive ends at the stream's renewal: a 15 s keepalive no
    longer stretches a stream past KODO_SSE_MAX_S by up to 15 s."""
    hub = RunEventHub("postgresql://unused")
    sub = hub.subscribe("r1")
    body = stream(sub, FIRST, lambda: FIRST, frozenset(), keepalive_s=15, max_s=0.2)
    next(body), next(body)  # the retry block, the first state
    began = time.monotonic()

    assert list(body) == [": keepalive\n\n", events.RENEW]
    assert time.monotonic() - began < 5, "renewed long after its time"
