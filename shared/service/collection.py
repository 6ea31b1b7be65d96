"""What the collector reads and writes: the sent calls, and their wake-ups.

A wake-up is one statement (mark the ended sessions' sent calls idle, naming their
steps) and one RunStep per step, sent after commit by the unit of work's outbox. Each
names the task that sent the call as its parent: the collector is no task, so Celery
could not tell, and Flower would draw the completion outside the run's tree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from shared.db.repos.ledger import LedgerRepo, SentCall
from shared.domain.run_machine import StepId
from shared.service.messages import RunStep
from shared.service.uow import UnitOfWork


def wake_steps(uow: UnitOfWork, session_ids: list[str], daemon: str | None = None) -> list[RunStep]:
    """Mark the sent calls of these ended sessions (of ``daemon``, whose event said they
    ended) idle and send their steps again: one statement, committed lazily
    (``shared.db.repos.ledger._WAKE``), so the unit of work may run it alone."""
    woken = [
        RunStep(StepId(step_id), run_id, parent)
        for run_id, step_id, parent in uow.ledger.wake(session_ids, daemon)
    ]
    for message in woken:
        uow.send_after_commit(message)
    return woken


def wake_errored_step(
    uow: UnitOfWork, session_id: str, error: str, daemon: str | None = None
) -> list[RunStep]:
    """As :func:`wake_steps` for a session that ended with ``session.error``; the daemon's
    error is kept on the call's row for the step that collects it."""
    woken = [
        RunStep(StepId(step_id), run_id, parent)
        for run_id, step_id, parent in LedgerRepo(uow.session).wake_with_error(
            session_id, error, daemon
        )
    ]
    for message in woken:
        uow.send_after_commit(message)
    return woken


def mark_over_bound(uow: UnitOfWork, session_id: str, error: str, daemon: str) -> list[str]:
    """Keep ``error`` on the sent call of ``session_id`` (of ``daemon``) whose turn is
    still running and has no error yet, for its step to judge the turn by once the
    abort ends it; the directories of the calls marked (to abort them in)."""
    return LedgerRepo(uow.session).mark_over_bound(session_id, error, daemon)


def fail_lost_daemon_calls(
    uow: UnitOfWork, daemon: str, now: datetime, down_s: float
) -> list[RunStep]:
    """Record the sent calls of a daemon unreachable for ``down_s`` failed and wake their
    steps: the next attempt goes to a daemon that answers (this one may have billed)."""
    error = (
        f"DaemonLost: the daemon {daemon} holding the call's session was unreachable for"
        f" {down_s:.0f}s; the call is recorded failed (it may have been billed) and the"
        " next attempt goes to another daemon"
    )
    woken = [
        RunStep(StepId(step_id), run_id, parent)
        for run_id, step_id, parent in LedgerRepo(uow.session).fail_sent_at(daemon, now, error)
    ]
    for message in woken:
        uow.send_after_commit(message)
    return woken


def sent_calls(s: Session, daemon: str | None, *, claimed: bool = False) -> list[SentCall]:
    """The calls awaiting collection at ``daemon`` (all of them for ``None``); with
    ``claimed``, also those not yet recorded sent whose session is named."""
    return LedgerRepo(s).sent_calls(daemon, claimed=claimed)
