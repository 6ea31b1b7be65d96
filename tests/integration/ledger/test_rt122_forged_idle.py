"""A ``session.idle`` on one daemon's event stream wakes only that daemon's calls
(red-team helper-122).

The collector follows each daemon's ``GET /global/event``; on ``session.idle`` it ran
``LedgerRepo.wake`` with the event's ``sessionID``, matched against every ``sent`` call
whatever daemon held it: one event with another daemon's session id ended a call that
daemon was still running. Safe outcome: a wake-up names only calls of the collector's
own daemon.

(Helper-122 also showed that a call woken by ``session.idle`` is judged without asking
``GET /session/status`` whether it still runs: a daemon saying idle before its turn is
over gets an answer-less outcome recorded. Only a daemon lying about its own session
does that, and such a daemon can say "not busy" as well; it is left as noted.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.worker.collector import Collector
from shared.clock import SystemClock
from shared.db.models import OpenCodeCall
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import StructuredCall
from shared.opencode.events import OcEvent
from shared.service.messages import InMemorySender
from tests.factories import RunFactory
from tests.fakes.agent import FakeAgent

pytestmark = pytest.mark.integration

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
DAEMON_A = "http://127.0.0.1:1"  # the daemon whose stream says the session is idle
DAEMON_B = "http://127.0.0.1:2"  # the daemon that holds the call's session


def test_an_idle_event_on_one_daemons_stream_wakes_no_call_of_another_daemon(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    ledger = PostgresCallLedger(sessions)
    call = StructuredCall(run.id, "DecideST", 1, "plan", "choose", BUILD_OUTPUT_SCHEMA, "/w")
    assert ledger.claim(call, {"prompt": call.prompt}, lease=None)
    assert ledger.mark_started(call.op_key, "ses_on_daemon_b", DAEMON_B)
    assert ledger.mark_sent(call.op_key)

    forger = FakeAgent()  # daemon A: its stream names B's session (forged or mistaken)
    forger.event_log.append(
        OcEvent("session.idle", {"sessionID": "ses_on_daemon_b"}, "evt_x", "/elsewhere")
    )
    sender = InMemorySender()
    collector = Collector(
        forger, sessions, sender, daemon=DAEMON_A, clock=SystemClock(), reconnect_s=0.05
    )
    stop = threading.Event()
    follower = threading.Thread(target=collector.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        assert collector.wait_ready(5)
        time.sleep(0.5)
    finally:
        stop.set()
        follower.join(5)
    with sessions() as s:
        idle_at = s.execute(
            select(OpenCodeCall.idle_at).where(OpenCodeCall.op_key == call.op_key)
        ).scalar_one()
    assert not sender.sent, f"daemon A's collector woke {[m.run_id for m in sender.sent][:1]}"
    assert idle_at is None, (
        f"daemon A's collector woke the call held by daemon B (idle_at={idle_at},"
        f" woke {[m.run_id for m in sender.sent][:1]}): a sessionID on one daemon's"
        " stream is matched against every daemon's sent calls"
    )
