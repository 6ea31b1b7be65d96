"""Recovery from Postgres alone: find runs whose current step is not progressing.

A step is not progressing when its message was lost before any delivery entered it
(no checkpoint row, and the run has not moved for ``redispatch_after_s``) or when the
delivery that entered it stopped renewing its lease (the worker died). Such a step
is re-dispatched, and its lease handed to the next delivery; the fencing token keeps
a late, presumed-dead worker from overwriting its successor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, aliased

from shared.db.models import Run, StepRun
from shared.db.repos.steps import RECONCILER, db_now
from shared.domain.run_machine import STEP_STATUS, StepId
from shared.domain.vocab import StepRunStatus


@dataclass(frozen=True)
class Redispatch:
    run_id: str
    step: StepId
    reason: str


HARD_CAP_FACTOR = 10
"""A never-entered step is re-sent despite a broker backlog once it waited this many
times ``redispatch_after_s``: the backlog is only a hint, Postgres decides."""


def find_and_claim_stalled(
    s: Session,
    *,
    now: datetime,
    redispatch_after_s: float,
    broker_backlog: int = 0,
    limit: int = 500,
) -> list[Redispatch]:
    """Pick stalled steps (locking their runs) and mark them handed to the next delivery.

    A step nobody entered may simply wait in a busy queue: while the broker reports a
    backlog, such a step is re-sent only after ``HARD_CAP_FACTOR`` times the usual
    wait, so a long queue is not flooded with copies. A step whose lease expired was
    entered by a worker that died: it is re-sent whatever the backlog.
    """
    cutoff = now - timedelta(
        seconds=redispatch_after_s * (HARD_CAP_FACTOR if broker_backlog > 0 else 1)
    )
    found: list[Redispatch] = []
    for step, status in STEP_STATUS.items():
        checkpoint = aliased(StepRun)
        rows = s.execute(
            select(Run.id, checkpoint.id, checkpoint.lease_owner)
            .outerjoin(
                checkpoint,
                and_(checkpoint.run_id == Run.id, checkpoint.step_id == step.value),
            )
            .where(
                Run.status == status.value,
                or_(
                    and_(checkpoint.id.is_(None), Run.updated_at < cutoff),
                    # Leases are database times (see repos.steps): so is their deadline.
                    and_(
                        checkpoint.status == StepRunStatus.RUNNING.value,
                        checkpoint.lease_expires_at < db_now(),
                    ),
                ),
            )
            .order_by(Run.updated_at)
            .limit(limit)
            .with_for_update(of=Run, skip_locked=True)
        ).all()
        for run_id, checkpoint_id, owner in rows:
            reason = "never entered" if checkpoint_id is None else f"lease of {owner} expired"
            if checkpoint_id is None:
                s.execute(update(Run).where(Run.id == run_id).values(updated_at=now))
            else:
                s.execute(
                    update(StepRun)
                    .where(StepRun.id == checkpoint_id)
                    .values(
                        lease_owner=RECONCILER,
                        lease_expires_at=db_now() + timedelta(seconds=redispatch_after_s),
                    )
                )
            found.append(Redispatch(run_id, step, reason))
    return found
