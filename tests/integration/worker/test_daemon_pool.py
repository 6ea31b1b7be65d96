"""Calls spread over two oc-compat daemons, each collected by its own collector; a
daemon that dies is declared lost and its calls go again to the one that answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from devstack.supervisor import free_port
from services.worker.collector import Collector
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.clock import SystemClock
from shared.db.engine import make_engine
from shared.domain.run_machine import StepId
from shared.opencode.client import OpenCodeClient
from shared.service.messages import InMemorySender, RunStep
from standins.oc_compat.server import CompatConfig, CompatServer, running_server
from tests.integration.worker.conftest import RuntimeFactory, new_run
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def second_daemon() -> Iterator[str]:
    with running_server(seed=6) as url:
        yield url


@contextmanager
def _following(
    url: str, sessions: sessionmaker[Session], sender: InMemorySender, *, lost_after_s: float
) -> Iterator[tuple[Collector, threading.Thread]]:
    """A collector following the daemon at ``url`` in its own thread, as the collector
    process runs it, stopped on exit."""
    with OpenCodeClient(url, timeout_s=2) as client:
        collector = Collector(
            client,
            sessions,
            sender,
            daemon=client.base_url,
            clock=SystemClock(),
            lost_after_s=lost_after_s,
            reconnect_s=0.1,
        )
        stop = threading.Event()
        follower = threading.Thread(target=collector.follow, args=(stop,), daemon=True)
        follower.start()
        try:
            yield collector, follower
        finally:
            stop.set()
            follower.join(5)


def _calls(rt: Runtime, run_id: str) -> list[tuple[int, str, str | None, str | None]]:
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT attempt, status, daemon, error_name FROM app.opencode_calls"
                " WHERE run_id = :r ORDER BY attempt"
            ),
            {"r": run_id},
        ).all()
    return [(a, st, d, e) for a, st, d, e in rows]


def test_runs_are_spread_over_both_daemons_and_each_call_is_collected_from_its_own(
    make_rt: RuntimeFactory, oc_url: str, second_daemon: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True, oc_base_url=oc_url, oc_more_daemons=(second_daemon,))
    runs = [new_run(rt, repo, f"Add multiply to calc.py, variant {i}") for i in range(8)]
    for run_id in runs:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    used = {_calls(rt, run_id)[0][2] for run_id in runs}
    assert used == {oc_url, second_daemon}, "eight calls, both daemons used"
    sender = InMemorySender()
    with OpenCodeClient(oc_url, timeout_s=5) as a, OpenCodeClient(second_daemon, timeout_s=5) as b:
        collectors = [Collector(c, rt.sessions, sender, daemon=c.base_url) for c in (a, b)]
        for collector in collectors:
            collector.reconcile()
    assert sorted(m.run_id for m in sender.sent) == sorted(runs)
    for run_id in runs:
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
        [(attempt, status, _, _)] = _calls(rt, run_id)
        assert (attempt, status) == (1, "succeeded")


def test_a_daemon_that_dies_with_a_call_is_declared_lost_and_the_next_attempt_goes_elsewhere(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    doomed = CompatServer(CompatConfig(seed=8))
    doomed.start()
    try:
        rt = make_rt(oc_async=True, oc_base_url=doomed.base_url, oc_more_daemons=(oc_url,))
        # A goal whose first attempt the pool sends to the doomed daemon.
        run_id = ""
        for i in range(40):
            run_id = new_run(rt, repo, f"Add multiply to calc.py [oc:slow=60000] #{i}")
            assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
            if _calls(rt, run_id)[0][2] == doomed.base_url:
                break
        assert _calls(rt, run_id)[0][2] == doomed.base_url
    finally:
        doomed.stop()
    sender = InMemorySender()
    with _following(doomed.base_url, rt.sessions, sender, lost_after_s=0.5) as (collector, _):
        wait_until(lambda: collector.lost_calls, 15, "the collector to declare the daemon lost")
    assert RunStep(StepId.COMPILE, run_id) in sender.sent
    lost = _calls(rt, run_id)[0]
    assert (lost[1], lost[3]) == ("failed", "DaemonLost")
    # The woken step reads the failure (transient, retried) and sends attempt 2 to the
    # daemon that answers; the dead one is passed over for the same process.
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    second = _calls(rt, run_id)[1]
    assert (second[0], second[1], second[2]) == (2, "sent", oc_url)


def test_a_collector_whose_daemon_and_database_are_down_together_keeps_following(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    """Declaring the daemon lost writes to the database: with Postgres away too (a host's
    restart) that write fails, and the collector must go on trying, not end its thread,
    then declare the daemon lost once Postgres is back."""
    doomed = CompatServer(CompatConfig(seed=9))
    doomed.start()
    try:
        rt = make_rt(oc_async=True, oc_base_url=doomed.base_url)
        run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000]")
        assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    finally:
        doomed.stop()
    away = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/kodo")
    sender = InMemorySender()
    try:
        with _following(doomed.base_url, sessionmaker(away), sender, lost_after_s=0.2) as (
            collector,
            follower,
        ):
            time.sleep(1.5)  # a dozen passes past lost_after_s, each failing to record
            assert follower.is_alive(), "the follower thread survived the database's absence"
            assert collector.lost_calls == 0
            collector.sessions = rt.sessions  # Postgres is back
            wait_until(lambda: collector.lost_calls, 15, "the daemon declared lost")
    finally:
        away.dispose()
    assert RunStep(StepId.COMPILE, run_id) in sender.sent
    _, status, _, error_name = _calls(rt, run_id)[0]
    assert (status, error_name) == ("failed", "DaemonLost")
