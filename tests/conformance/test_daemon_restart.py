"""A daemon that dies under a sent call and comes back with its sessions kept.

``opencode serve`` 1.18.33 stores its sessions on disk: killed mid-turn (SIGKILL, as a
crash or an OOM kill does) and started again on the same state, it still knows the
call's session, idle now, whose last assistant message never completed (no
``time.completed``, no ``error``, zero tokens). The step the kill cut was never
counted, though the provider may have billed it. kodo records such a turn failed as
``TurnLost`` (cut short): the settle spends at least the call's reservation, as for any
turn cut short (migration 0027), instead of the zero its totals say.

Real daemon only: what a restarted daemon keeps is the finding; oc-compat keeps nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from devstack.oc_daemon import daemon
from devstack.oc_daemon.config import scripted_provider
from devstack.oc_daemon.daemon import Confinement, DaemonState
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import alive, free_port
from shared.clock import SystemClock
from shared.config import Settings
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallFailed, CallPending, StructuredCall
from shared.opencode.client import OpenCodeClient
from shared.opencode.exactly_once import ExactlyOnceCalls
from tests.conformance.conftest import MODEL, PASSWORD, warm
from tests.factories import RunFactory
from tests.waiting import wait_until

pytestmark = pytest.mark.conformance


class Restartable:
    """``opencode serve`` over the scripted LLM, in its sandbox, on one port and one state."""

    def __init__(self, binary: Path, llm_url: str, root: Path) -> None:
        self.binary, self.llm_url = binary, llm_url
        self.state_dir = root / "state"
        self.state_dir.mkdir()
        workspaces = root / "workspaces"
        workspaces.mkdir()
        self.confinement = Confinement(workspaces)
        self.repo = create_sample_repo(workspaces / "calc")
        self.port = free_port()
        self.state = self.start()

    def start(self) -> DaemonState:
        return daemon.start(
            self.binary,
            state_dir=self.state_dir,
            port=self.port,
            provider=scripted_provider(self.llm_url),
            password=PASSWORD,
            confinement=self.confinement,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash: the daemon gets no chance to end its turns."""
        os.killpg(self.state.pid, signal.SIGKILL)
        wait_until(lambda: not alive(self.state.pid), 10, "the killed daemon reaped")
        (self.state_dir / daemon.STATE_FILE).unlink()

    def client(self) -> OpenCodeClient:
        return OpenCodeClient(self.state.url, timeout_s=30, password=PASSWORD)


@pytest.fixture
def restartable(opencode_binary: Path, scripted_llm: str, tmp_path: Path) -> Iterator[Restartable]:
    made = Restartable(opencode_binary, scripted_llm, tmp_path)
    try:
        yield made
    finally:
        daemon.stop(made.state_dir)


def _calls(client: OpenCodeClient, sessions: sessionmaker[Session]) -> ExactlyOnceCalls:
    ledger = PostgresCallLedger(sessions, Settings().call_estimate())
    return ExactlyOnceCalls(
        client, ledger, SystemClock(), model=MODEL, timeout_s=120.0, async_calls=True
    )


def test_a_turn_cut_by_a_daemon_crash_is_collected_as_lost_and_spends_its_reservation(
    restartable: Restartable, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory()
    db.commit()
    warm(restartable.state.url, PASSWORD, restartable.repo)
    call = StructuredCall(
        str(run.id),
        "CompileST",
        1,
        "plan",
        "Plan a docstring for calc.py [oc:tool=read@calc.py] [oc:slow=60000]",
        PLAN_OUTPUT_SCHEMA,
        str(restartable.repo),
    )
    with restartable.client() as client:
        with pytest.raises(CallPending) as pending:
            _calls(client, sessions).prompt_structured(call)
        session_id = pending.value.session_id
        directory = str(restartable.repo)
        wait_until(
            lambda: session_id in client.busy_sessions(directory=directory), 30, "the turn busy"
        )
        time.sleep(2.0)  # the read ran; the structured answer is held by the scripted LLM
    PostgresCallLedger(sessions).mark_sent(call.op_key)  # what the parker records

    restartable.kill()
    restartable.state = restartable.start()
    with restartable.client() as client:
        assert session_id not in client.busy_sessions(directory=directory)
        last = client.last_message(session_id, directory=directory)
        assert last is not None
        assert last.info["role"] == "assistant"
        assert "completed" not in last.info["time"], "the kill cut the step: never completed"
        assert last.info.get("error") is None, "and the daemon says nothing of it"
        with pytest.raises(CallFailed) as failed:
            _calls(client, sessions).prompt_structured(call)
    assert failed.value.error_name == "TurnLost"
    assert failed.value.kind == "transient", "the step asks again"
    with sessions() as s:
        row = s.execute(
            text(
                "SELECT status, error_name, usage, reserved_tokens, spent_tokens"
                " FROM app.opencode_calls WHERE op_key = :k"
            ),
            {"k": call.op_key},
        ).one()
    assert (row.status, row.error_name) == ("failed", "TurnLost")
    assert row.usage["total_tokens"] == 0, "the daemon's totals never counted the cut step"
    assert row.spent_tokens == row.reserved_tokens > 0, "cut short: spends its reservation"
