"""Deleting again the daemon sessions whose delete failed (``app.sessions_to_forget``).

kodo deletes a call's session once its answer is recorded, and a cancel the sessions it
aborted: each daemon keeps every session in memory. A delete the daemon did not answer
(restarting, a 5xx, unreachable) is kept, and each reconciler pass tries the due ones
again, a daemon that fails once not asked again in the same pass, each session paused
longer after every failure (:func:`shared.db.repos.sessions_to_forget.retry_pause`).
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from services.worker.runtime import Runtime
from shared.db.repos.sessions_to_forget import ForgetRepo, Forgettable, retry_pause
from shared.opencode.daemons import UnknownDaemon
from shared.opencode.errors import OpenCodeError

log = structlog.get_logger("kodo.forget")

FORGET_LIMIT = 20
"""Sessions one pass tries at most (the next pass takes the rest)."""
FORGET_BUDGET_S = 20.0
"""A pass starts no delete after this long (a hung daemon costs its timeout once)."""


def forget_sessions(rt: Runtime) -> list[str]:
    """Try the due deletes again; return the sessions now gone from their daemons."""
    with rt.uow() as uow:
        due = ForgetRepo(uow.session).due(FORGET_LIMIT)
    began = rt.clock.monotonic()
    silent: set[str] = set()  # daemons whose delete failed in this pass
    gone: list[str] = []
    for row in due:
        if rt.clock.monotonic() - began > FORGET_BUDGET_S:
            break
        try:
            daemon = rt.daemons.of(row.daemon)
        except UnknownDaemon as exc:  # no longer configured: nothing can delete it here
            _forgotten(rt, row)
            log.warning("forget.daemon_unknown", session_id=row.session_id, error=str(exc))
            continue
        if daemon.url in silent:
            continue
        try:
            daemon.client.delete_session(row.session_id, directory=row.directory)
        except OpenCodeError as exc:
            if exc.status != 404:  # a 404: gone already (the daemon restarted without it)
                silent.add(daemon.url)
                _failed_again(rt, row, str(exc))
                continue
        _forgotten(rt, row)
        gone.append(row.session_id)
        log.info("forget.deleted", session_id=row.session_id, attempts=row.attempts + 1)
    return gone


def _forgotten(rt: Runtime, row: Forgettable) -> None:
    with rt.uow() as uow:
        ForgetRepo(uow.session).forgotten(row.id)


def _failed_again(rt: Runtime, row: Forgettable, error: str) -> None:
    """Record the failure; a record the database refuses is logged, never the end of the
    pass: the row comes first again at every pass, and every row after it would wait."""
    try:
        with rt.uow() as uow:
            ForgetRepo(uow.session).failed_again(row.id, error, retry_pause(row.attempts))
    except (OperationalError, InterfaceError):
        raise  # the database is away: the pass ends, the reconciler tries again
    except DBAPIError as exc:
        log.error("forget.not_recorded", session_id=row.session_id, error=str(exc.orig)[:300])
        return
    log.warning("forget.failed", session_id=row.session_id, attempts=row.attempts + 1)
