"""Delivery and cleanup, in rows: which finished runs still need their branch pushed or
their worktree removed, and what happened when a worker tried (SQL-first triage).

The git work itself is the worker's (services/worker/delivery.py); these functions only
read and write ``app.runs`` inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.db.models import Intent, Run, StepRun
from shared.domain.run_machine import TERMINAL, RunStatus, StepId

MAX_DELIVERY_ATTEMPTS = 5
"""A push that keeps failing (no such remote, a refused update) is tried this often."""

DELIVERY_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Delivery:
    run_id: str
    repo_path: str
    branch: str
    commit: str | None
    """The commit ApplyPatchST judged and ExecuteST verified: the one delivered."""


@dataclass(frozen=True)
class Cleanup:
    run_id: str
    status: str
    repo_path: str
    worktree_path: str | None
    branch: str | None


def due_deliveries(s: Session, *, limit: int = 20, run_id: str | None = None) -> list[Delivery]:
    """Succeeded runs whose branch is not pushed yet (attempts left), oldest first."""
    judged = StepRun.output["commit"].astext
    query = (
        select(Run.id, Intent.repo_path, Run.branch, judged)
        .join(Intent, Intent.id == Run.intent_id)
        .outerjoin(
            StepRun,
            (StepRun.run_id == Run.id) & (StepRun.step_id == StepId.APPLY_PATCH.value),
        )
        .where(
            Run.status == RunStatus.SUCCEEDED.value,
            Run.delivered_sha.is_(None),
            Run.branch.is_not(None),
            Run.branch_removed_at.is_(None),
            Run.delivery_attempts < MAX_DELIVERY_ATTEMPTS,
        )
        .order_by(Run.finished_at)
        .limit(limit)
    )
    if run_id is not None:
        query = query.where(Run.id == run_id)
    rows = s.execute(query).all()
    return [Delivery(r, repo, branch, commit) for r, repo, branch, commit in rows if branch]


def record_delivery(s: Session, run_id: str, *, sha: str | None, error: str | None) -> None:
    """The push's outcome: the sha the remote now has, or why it failed (one more try)."""
    values: dict[str, object] = {"delivery_attempts": Run.delivery_attempts + 1}
    if sha is not None:
        values.update(delivered_sha=sha, delivered_at=func.now(), delivery_error=None)
    else:
        values.update(delivery_error=(error or "unknown")[:DELIVERY_ERROR_CHARS])
    s.execute(update(Run).where(Run.id == run_id).values(**values))


CLEANUP_RETRY_S = 600.0
"""A cleanup that failed is tried again after this long, and after every other due one."""


def due_cleanups(s: Session, *, now: datetime, grace_s: float, limit: int = 20) -> list[Cleanup]:
    """Finished runs whose worktree outlived the grace period, oldest first (one that
    ended before CompileST recorded its outcome names its worktree, from its first call's
    claim, but no branch: the cleanup takes the one CompileST makes); a run whose
    cleanup failed waits CLEANUP_RETRY_S, then comes after those never tried (twenty
    that always fail would otherwise starve every newer cleanup)."""
    rows = s.execute(
        select(Run.id, Run.status, Intent.repo_path, Run.worktree_path, Run.branch)
        .join(Intent, Intent.id == Run.intent_id)
        .where(
            Run.status.in_([status.value for status in TERMINAL]),
            Run.finished_at < now - timedelta(seconds=grace_s),
            Run.worktree_removed_at.is_(None),
            Run.worktree_path.is_not(None),  # named by the run's first call (its claim)
            Run.cleanup_failed_at.is_(None)
            | (Run.cleanup_failed_at < now - timedelta(seconds=CLEANUP_RETRY_S)),
        )
        .order_by(Run.cleanup_failed_at.asc().nulls_first(), Run.finished_at)
        .limit(limit)
    ).all()
    return [Cleanup(*row) for row in rows]


def record_cleanup(s: Session, run_id: str, *, branch_removed: bool) -> None:
    values: dict[str, object] = {"worktree_removed_at": func.now(), "cleanup_error": None}
    if branch_removed:
        values["branch_removed_at"] = func.now()
    s.execute(update(Run).where(Run.id == run_id).values(**values))


def record_cleanup_failure(s: Session, run_id: str, *, now: datetime, error: str) -> None:
    """Why the run's worktree could not be removed; it is tried again later, after others."""
    s.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(cleanup_failed_at=now, cleanup_error=error[:DELIVERY_ERROR_CHARS])
    )
