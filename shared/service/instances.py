"""What daemons hold open for runs' worktrees, in rows: which runs rest with a worktree
still open on a daemon, and where (the daemon side is services/worker/instances.py).

opencode serve opens an "instance" for every directory a request names and keeps it
after the sessions are deleted (about 60 MB and thousands of memory mappings per
worktree with 1.18.33). The claim of a call stamps ``runs.instances_opened_at``; a run
that rests (``AT_REST``) for ``KODO_INSTANCE_RELEASE_S`` is released by the reconciler:
each daemon its calls since the stamp went to disposes the worktree's instance, under
the run's row lock (an approval, answer or retry takes that lock to move the run, so no
call of the run starts while its worktree is being let go), and the stamp is emptied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.db.models import OpenCodeCall, Run
from shared.domain.run_machine import AT_REST

_RESTING = tuple(status.value for status in AT_REST)


@dataclass(frozen=True)
class Opened:
    """A daemon (its URL as the ledger records it; None: the only one there was) holding
    a directory open."""

    daemon: str | None
    directory: str


def due_releases(s: Session, *, rested_before: datetime, limit: int = 50) -> list[str]:
    """Runs resting since before ``rested_before`` with a worktree open, longest first."""
    rows = s.execute(
        select(Run.id)
        .where(
            Run.instances_opened_at.is_not(None),
            Run.status.in_(_RESTING),
            Run.updated_at < rested_before,
        )
        .order_by(Run.updated_at)
        .limit(limit)
    ).scalars()
    return list(rows)


def claim_release(s: Session, run_id: str, *, rested_before: datetime) -> list[Opened] | None:
    """Lock the run if it still rests with its worktree open (SKIP LOCKED: a run being
    moved is left for the next pass): where its calls since the stamp were opened.
    None: nothing to release (the run moved on, was released, or is locked)."""
    opened_at = s.execute(
        select(Run.instances_opened_at)
        .where(
            Run.id == run_id,
            Run.instances_opened_at.is_not(None),
            Run.status.in_(_RESTING),
            Run.updated_at < rested_before,
        )
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
    s.execute(update(Run).where(Run.id == run_id).values(instances_opened_at=None))
