"""Aborting a cancelled run's in-flight provider calls (the worker owns OpenCode).

A cancel sends AbortCalls; the reconciler's pass sweeps what that missed, from the rows
alone: a prompt sent after the abort ran (the cancel landed between the call's claim
and its send), or an AbortCalls message Redis lost. Either leaves a ``sent`` call of a
cancelled run that no step will ever collect: its turn would run on, unbilled, its
reservation never settled.
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from services.worker.runtime import Runtime
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.runs import RunRepo
from shared.domain.run_machine import RunStatus
from shared.opencode.daemons import UnknownDaemon
from shared.opencode.errors import OpenCodeError
from shared.opencode.exactly_once import ABORT_S, BILLED_READ_S
from shared.opencode.ports import AgentClient
from shared.opencode.turn_inspection import usage_of

log = structlog.get_logger("kodo.cancel")


SWEEP_LIMIT = 20
"""Cancelled runs whose missed calls one reconciler pass aborts (the next takes the rest):
each abort may wait ABORT_S on a hung daemon, and the pass has other work after it."""


def abort_missed_calls(rt: Runtime) -> list[str]:
    """Abort and record the ``sent`` calls of cancelled runs (see the module's note);
    return the runs swept."""
    with rt.sessions() as s:
        runs = LedgerRepo(s).cancelled_runs_with_sent_calls(SWEEP_LIMIT)
    for run_id in runs:
        aborted = abort_inflight_calls(rt, run_id)
        log.warning("cancel.missed_call_swept", run_id=run_id, sessions=aborted)
    return runs


def abort_inflight_calls(rt: Runtime, run_id: str) -> list[str]:
    """Abort the OpenCode session of every claimed or sent call of a cancelled run; the
    sent ones are recorded ``aborted`` with their session's totals read after the abort
    (claimed ones are recorded by their claimant). The settle spends at least each
    one's reservation: the step the abort cut is in no totals."""
    with rt.sessions() as s:
        if RunRepo(s).status_of(run_id) != RunStatus.CANCELLED.value:
            return []
        open_sessions = LedgerRepo(s).open_sessions_of(run_id)
    aborted: list[str] = []
    totals: dict[str, dict[str, Any] | None] = {}
    read: list[tuple[AgentClient, str, str]] = []  # (client, session, directory) of totals
    for session_id, directory, daemon, sent in open_sessions:
        with contextlib.suppress(OpenCodeError, UnknownDaemon):  # an ended session: no abort
            client = rt.daemons.of(daemon).client
            client.abort(session_id, directory=directory, timeout_s=ABORT_S)
            aborted.append(session_id)
            log.info("cancel.aborted_call", run_id=run_id, session_id=session_id)
            if sent:  # (a claimed call's claimant records its own, totals and all)
                session = client.get_session(
                    session_id, directory=directory, timeout_s=BILLED_READ_S
                )
                totals[session_id] = usage_of(session)
                read.append((client, session_id, directory))
    tried = [session_id for session_id, _directory, _daemon, was_sent in open_sessions if was_sent]
    with rt.uow() as uow:
        LedgerRepo(uow.session).abort_sent_of(run_id, rt.clock.now(), totals, tried)
    if not rt.settings.oc_keep_sessions:
        # Recorded with their totals: the ledger keeps what triage needs, and a session
        # the daemon keeps costs it memory (best effort, as after any recorded answer).
        for client, session_id, directory in read:
            with contextlib.suppress(OpenCodeError):
                client.delete_session(session_id, directory=directory)
    return aborted
