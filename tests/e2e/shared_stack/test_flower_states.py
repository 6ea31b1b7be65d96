"""What Flower shows of a run, read from the same task events Flower reads.

A real stack (worker, beat, collector, API, OpenCode stand-in); task events enabled on
the worker as Flower enables them (``enable_events``), and captured off the broker:
- a run's task messages all carry the run id as their root id (one chain in Flower);
- a step that ends its run ``failed`` ends its task FAILURE, once: no retry, no
  redelivery (acks_late and reject_on_worker_lost stay).
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from devstack.kodo_procs import Stack
from shared.config import Settings
from shared.queue import QUEUE, make_celery
from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e

STEPS = ["kodo.CompileST", "kodo.ApplyPatchST", "kodo.DecideST", "kodo.ExecuteST"]


class TaskEvents:
    """Task events off the broker, as Flower's event consumer receives them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._receiver: Any = None

    def _capture(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        assert self._ready.wait(10), "the event receiver did not start"
        self.app.control.enable_events()  # what Flower does for the workers it watches
        time.sleep(1.0)  # the worker turns its events on when it reads that broadcast
        return self

    def __exit__(self, *_: object) -> None:
        self.app.control.disable_events()  # the package's worker goes on without them
        self._receiver.should_stop = True
        self._thread.join(5)

    def of_run(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        """Events of ``kind`` for the run's tasks (task-received names the task and args)."""
        received = {
            e["uuid"]: e
            for e in list(self.seen)
            if e["type"] == "task-received" and run_id in ast.literal_eval(e["args"])
        }
        return [
            {**received[e["uuid"]], "type": e["type"], "state_event": e}
            for e in list(self.seen)
            if e["type"] == kind and e.get("uuid") in received
        ]


@pytest.fixture(scope="module")
def events(stack: Stack) -> Iterator[TaskEvents]:
    app = make_celery(
        Settings(database_url=stack.env["DATABASE_URL"], redis_url=stack.env["REDIS_URL"])
    )
    with TaskEvents(app) as captured:
        yield captured
    app.close()


def _approve(api: Api, run_id: str) -> None:
    waiting = api.wait_for(run_id, {"waiting_input"})
    approved = api.http.post(
        f"/runs/{run_id}/approve-plan",
        json={"planSha256": waiting["planSha256"]},
        headers=api.bearer("alice", "approver"),
    )
    assert approved.status_code == 200, approved.text


def _settled(events: TaskEvents, run_id: str, count: int) -> None:
    """Wait for the events of the run's last tasks (they follow the run's status)."""
    end = time.monotonic() + 15
    while time.monotonic() < end:
        ended = events.of_run(run_id, "task-succeeded") + events.of_run(run_id, "task-failed")
        if len(ended) >= count:
            return
        time.sleep(0.2)


def test_a_runs_task_messages_carry_the_run_id_as_their_root(
    api: Api, events: TaskEvents, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a multiply function to calc.py with a test")
    _approve(api, run_id)
    api.wait_for(run_id, {"succeeded"}, deadline_s=90)
    _settled(events, run_id, len(STEPS))

    received = events.of_run(run_id, "task-received")
    steps = [e for e in received if e["name"] in STEPS]
    assert sorted({e["name"] for e in steps}) == sorted(STEPS)
    assert {e["root_id"] for e in received} == {run_id}, "one chain: the run's"
    by_uuid = {e["uuid"]: e for e in received}
    parented = [e for e in received if e.get("parent_id")]
    assert all(e["parent_id"] in by_uuid for e in parented), "parents are the run's own tasks"
    (execute,) = [e for e in received if e["name"] == "kodo.ExecuteST"]
    assert by_uuid[execute["parent_id"]]["name"] == "kodo.DecideST", (
        "a step sent by the step before it names that step's task as its parent"
    )
    completions = sorted(
        {e["name"] for e in parented if by_uuid[e["parent_id"]]["name"] == e["name"]}
    )
    assert completions == ["kodo.ApplyPatchST", "kodo.CompileST"], (
        "each call's completion, sent by the collector, names the delivery that sent the call"
    )
    (decide,) = [e for e in received if e["name"] == "kodo.DecideST"]
    assert by_uuid[decide["parent_id"]]["name"] == "kodo.ApplyPatchST", (
        "decide's call was sent by the delivery that recorded the patch: its completion"
        " names that delivery, and is DecideST's one task"
    )
    unparented = sorted(e["name"] for e in received if not e.get("parent_id"))
    assert unparented == ["kodo.ApplyPatchST", "kodo.CompileST"], (
        "only the submit and the approval (API requests, not tasks) start without a parent"
    )


def test_a_step_that_fails_its_run_ends_its_task_failure_once_and_is_not_redelivered(
    api: Api, events: TaskEvents, sample_repo: Path
) -> None:
    run_id = api.submit(sample_repo, "Add a note to README.md [oc:fail-verify]")
    _approve(api, run_id)
    failed = api.wait_for(run_id, {"failed"}, deadline_s=90)
    rounds = {s["stepId"]: s["round"] for s in failed["steps"]}["ExecuteST"]
    _settled(events, run_id, 1)
    time.sleep(2.0)  # room for a redelivery or a retry, were there one

    failures = events.of_run(run_id, "task-failed")
    assert [e["name"] for e in failures] == ["kodo.ExecuteST"]
    assert "RunFailed" in failures[0]["state_event"]["exception"]
    executes = [e for e in events.of_run(run_id, "task-received") if e["name"] == "kodo.ExecuteST"]
    assert len(executes) == rounds, "each ExecuteST round delivered once: no redelivery"
    assert len({e["uuid"] for e in executes}) == rounds
    assert events.of_run(run_id, "task-retried") == []
    with events.app.connection_for_read() as conn:
        assert conn.default_channel.client.llen(QUEUE) == 0, "nothing requeued"
