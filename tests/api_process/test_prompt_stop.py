"""An API told to stop ends its event streams and idle connections instead of waiting.

gunicorn's gevent worker waits, on SIGTERM, until no connection is left open, for up to
its graceful timeout; an event stream lasts until its run ends and an idle keep-alive
connection until the header-read deadline, so an open UI tab kept every ``kodo down``
and deploy waiting the whole 10 s, after which the stream was cut mid-body. Now the
stream ends cleanly (the client resumes elsewhere with ``Last-Event-ID``), the idle
connection is closed, a request being served still gets its whole answer, and the
process exits on SIGTERM alone.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import Stack
from devstack.supervisor import stop
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory

from .conftest import api_process

pytestmark = pytest.mark.integration

GRACE_S = 30.0  # far past gunicorn's own graceful timeout: only a hung master needs a kill


def workers_that_exited_by_themselves(log: str) -> tuple[set[str], set[str]]:
    """The worker pids booted, and those that logged their own exit; one the master
    SIGKILLed at its graceful timeout never does."""
    booted = set(re.findall(r"Booting worker with pid: (\d+)", log))
    exited = set(re.findall(r"Worker exiting \(pid: (\d+)\)", log))
    return booted, exited


@pytest.fixture
def stopping_api(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with api_process(
        tmp_path_factory.mktemp("stop"),
        database_url,
        redis_url,
        KODO_REDIS_KEY_PREFIX=f"kodo-test-{uuid.uuid4().hex[:12]}",
        KODO_API_WORKERS="1",  # every connection on the one worker
        # An idle keep-alive connection would outlast the graceful timeout by itself.
        KODO_HEADER_TIMEOUT_S="60",
    ) as stack:
        yield stack


def test_an_idle_keep_alive_connection_is_closed_and_the_api_exits_on_sigterm(
    stopping_api: Stack,
) -> None:
    api = stopping_api.proc("api")
    with httpx.Client(base_url=stopping_api.api_url, timeout=60) as idle:
        assert idle.get("/healthz").status_code == 200  # its connection stays pooled, idle
        outcome = stop(api.pid, grace_s=GRACE_S)

    log = api.log_tail(200)
    assert outcome == "stopped", f"the API needed SIGKILL:\n{log}"
    booted, exited = workers_that_exited_by_themselves(log)
    assert booted, log
    assert exited == booted, f"the idle connection held a worker until it was killed:\n{log}"


def test_an_open_event_stream_is_ended_cleanly_and_the_api_exits_on_sigterm(
    stopping_api: Stack, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    with UnitOfWork(sessions) as uow:
        token = create_token(uow, "stella", Role.APPROVER)
    headers = {"Authorization": f"Bearer {token}"}
    api = stopping_api.proc("api")
    streamed: list[str] = []
    ended: list[BaseException | None] = []
    first_frame = threading.Event()

    def watch(http: httpx.Client) -> None:
        try:
            with http.stream("GET", f"/runs/{run.id}/events") as reply:
                assert reply.status_code == 200
                for line in reply.iter_lines():
                    streamed.append(line)
                    if line.startswith("data:"):
                        first_frame.set()
            ended.append(None)
        except BaseException as exc:  # a stream cut mid-body: httpx.RemoteProtocolError
            ended.append(exc)
            first_frame.set()

    with httpx.Client(base_url=stopping_api.api_url, headers=headers, timeout=60) as streaming:
        watcher = threading.Thread(target=watch, args=(streaming,))
        watcher.start()
        assert first_frame.wait(30), "the stream never sent the run's state"
        outcome = stop(api.pid, grace_s=GRACE_S)
        watcher.join(10)

    log = api.log_tail(200)
    assert outcome == "stopped", f"the API needed SIGKILL:\n{log}"
    booted, exited = workers_that_exited_by_themselves(log)
    assert booted, log
    assert exited == booted, f"the stream held a worker until it was killed:\n{log}"
    assert ended == [None], f"the stream was cut, not ended: {ended}"
    states = [json.loads(line[5:])["status"] for line in streamed if line.startswith("data:")]
    assert states == ["waiting_input"], streamed
