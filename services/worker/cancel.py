"""Aborting a cancelled run's in-flight provider calls (the worker owns OpenCode)."""

from __future__ import annotations

import contextlib

import structlog
from sqlalchemy import select

from services.worker.runtime import Runtime
from shared.db.models import OpenCodeCall, Run
from shared.domain.run_machine import RunStatus
from shared.domain.vocab import CallStatus
from shared.opencode.errors import OpenCodeError

log = structlog.get_logger("kodo.cancel")


def abort_inflight_calls(rt: Runtime, run_id: str) -> list[str]:
    """Abort the OpenCode session of every still-claimed call of a cancelled run."""
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        if run is None or run.status != RunStatus.CANCELLED:
            return []
        rows = s.execute(
            select(OpenCodeCall.session_id, OpenCodeCall.request["directory"].as_string()).where(
                OpenCodeCall.run_id == run_id,
                OpenCodeCall.status == CallStatus.CLAIMED.value,
                OpenCodeCall.session_id.is_not(None),
            )
        ).all()
    aborted: list[str] = []
    for session_id, directory in rows:
        if session_id is None or directory is None:
            continue
        with contextlib.suppress(OpenCodeError):  # an ended session needs no abort
            rt.client.abort(session_id, directory=directory)
            aborted.append(session_id)
            log.info("cancel.aborted_call", run_id=run_id, session_id=session_id)
    return aborted
