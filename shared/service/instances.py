"""What daemons hold open for runs' worktrees, in rows: which runs rest with a worktree
still open on a daemon, and where (the daemon side is services/worker/instances.py).

opencode serve opens an "instance" for every directory a request names and keeps it
after the sessions are deleted (about 60 MB and thousands of memory mappings per
worktree with 1.18.33). The claim of a call stamps ``runs.instances_opened_at``; a run
that rests (``AT_REST``) for ``KODO_INSTANCE_RELEASE_S`` is released by the reconciler:
each daemon its calls since the stamp went to disposes the worktree's instance, under
the run's row lock (an approval, answer or retry takes that lock to move the run, so no
call of the run starts while its worktree is being let go), and the stamp is emptied.

A dispose also ends every turn in flight in the directory, and any request naming the
directory opens it again: a run with a call that may still be running (claimed or sent,
younger than the call deadline) is not released, whatever its status (a cancelled run's
abort, a parked step's collection, still to come); the daemon is asked too, since the
rows can miss a turn (services/worker/instances.py). A release a daemon did not answer
keeps the stamp and is tried again ``KODO_INSTANCE_RETRY_S`` later, after the runs never
tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session

from shared.db.models import OpenCodeCall, Run
from shared.db.repos.ledger import CALL_AGE, OPEN
from shared.domain.run_machine import AT_REST

_RESTING = tuple(status.value for status in AT_REST)


@dataclass(frozen=True)
class Opened:
    """A daemon (its URL as the ledger records it; None: the call's session was never
    made, or the row is from before daemons were recorded) holding a directory open."""

    daemon: str | None
    directory: str


@dataclass(frozen=True)
class Window:
    """Which runs a pass releases: resting since before ``rested_before``, with no call
    younger than ``call_horizon_s`` still open, and no release failed in the ``retry_s``
    before ``now``."""

    now: datetime
    rested_before: datetime
    call_horizon_s: float
    retry_s: float


def _releasable(w: Window) -> ColumnElement[bool]:
    """Resting long enough, something open, no call that may still be running (its age
    by the database's clock alone), and not a release that failed lately."""
    live_call = exists().where(
        OpenCodeCall.run_id == Run.id,
        OpenCodeCall.status.in_(OPEN),
        w.call_horizon_s > CALL_AGE,
    )
    return and_(
        Run.instances_opened_at.is_not(None),
        Run.status.in_(_RESTING),
        Run.updated_at < w.rested_before,
        or_(
            Run.instances_release_failed_at.is_(None),
            Run.instances_release_failed_at < w.now - timedelta(seconds=w.retry_s),
        ),
        ~live_call,
    )


def due_releases(s: Session, window: Window, *, limit: int = 50) -> list[str]:
    """Runs to release, those never tried first, then the longest resting."""
    rows = s.execute(
        select(Run.id)
        .where(_releasable(window))
        .order_by(Run.instances_release_failed_at.asc().nulls_first(), Run.updated_at)
        .limit(limit)
    ).scalars()
    return list(rows)


def claim_release(s: Session, run_id: str, window: Window) -> list[Opened] | None:
    """Lock the run if it is still to release (SKIP LOCKED: a run being moved is left
    for the next pass): where its calls since the stamp were opened. None: nothing to
    release now (the run moved on, was released, is locked, or has a call running)."""
    opened_at = s.execute(
        select(Run.instances_opened_at)
        .where(Run.id == run_id, _releasable(window))
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if opened_at is None:
        return None
    rows = s.execute(
        select(OpenCodeCall.daemon, OpenCodeCall.request["directory"].as_string())
        .where(OpenCodeCall.run_id == run_id, OpenCodeCall.created_at >= opened_at)
        .distinct()
    ).all()
    return sorted(
        (Opened(daemon, directory) for daemon, directory in rows if directory),
        key=lambda o: (o.daemon or "", o.directory),
    )


def record_release(s: Session, run_id: str) -> None:
    """Nothing of the run is held open any more (until its next call's claim)."""
    s.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(instances_opened_at=None, instances_release_failed_at=None)
    )


def record_release_failure(s: Session, run_id: str, *, now: datetime) -> None:
    """A daemon did not answer: the stamp stays, and the run waits ``Window.retry_s``."""
    s.execute(update(Run).where(Run.id == run_id).values(instances_release_failed_at=now))
