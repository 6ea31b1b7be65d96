"""Aborting a cancelled run's in-flight provider calls (the worker owns OpenCode)."""

from __future__ import annotations

import contextlib

import structlog

from services.worker.runtime import Runtime
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.runs import RunRepo
from shared.domain.run_machine import RunStatus
from shared.opencode.daemons import UnknownDaemon
from shared.opencode.errors import OpenCodeError

log = structlog.get_logger("kodo.cancel")


def abort_inflight_calls(rt: Runtime, run_id: str) -> list[str]:
    """Abort the OpenCode session of every claimed or sent call of a cancelled run; the
    sent ones are recorded ``aborted`` (claimed ones are recorded by their claimant)."""
    with rt.sessions() as s:
        if RunRepo(s).status_of(run_id) != RunStatus.CANCELLED.value:
            return []
        open_sessions = LedgerRepo(s).open_sessions_of(run_id)
    aborted: list[str] = []
    for session_id, directory, daemon in open_sessions:
        with contextlib.suppress(OpenCodeError, UnknownDaemon):  # an ended session: no abort
            rt.daemons.of(daemon).client.abort(session_id, directory=directory)
            aborted.append(session_id)
            log.info("cancel.aborted_call", run_id=run_id, session_id=session_id)
    with rt.uow() as uow:
        LedgerRepo(uow.session).abort_sent_of(run_id, rt.clock.now())
    return aborted
