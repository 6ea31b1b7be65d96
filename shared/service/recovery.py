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

from shared.domain.run_machine import STEP_STATUS, StepId
from shared.service.messages import RunStep
from shared.service.uow import UnitOfWork


@dataclass(frozen=True)
class Redispatch:
    run_id: str
    step: StepId
    reason: str


HARD_CAP_FACTOR = 10
"""A never-entered step is re-sent despite a broker backlog once it waited this many
times ``redispatch_after_s``: the backlog is only a hint, Postgres decides."""


def redispatch_stalled(
    uow: UnitOfWork,
    *,
    now: datetime,
    redispatch_after_s: float,
    broker_backlog: int = 0,
    limit: int = 500,
) -> list[Redispatch]:
    """Claim stalled steps (locking their runs) and re-send each after commit.

    A step nobody entered may simply wait in a busy queue: while the broker reports a
    backlog, such a step is re-sent only after ``HARD_CAP_FACTOR`` times the usual
    wait, so a long queue is not flooded with copies. A step whose lease expired was
    entered by a worker that died: it is re-sent whatever the backlog, and its lease
    handed to the next delivery.
    """
    cutoff = now - timedelta(
        seconds=redispatch_after_s * (HARD_CAP_FACTOR if broker_backlog > 0 else 1)
    )
    found: list[Redispatch] = []
    for step, status in STEP_STATUS.items():
        stalled = uow.steps.lock_stalled(
            step, status.value, never_entered_before=cutoff, limit=limit
        )
        for item in stalled:
            if item.checkpoint_id is None:
                reason = "never entered"
                uow.runs.touch(item.run_id, now)
            else:
                reason = f"lease of {item.lease_owner} expired"
                uow.steps.hand_lease_to_next_delivery(item.checkpoint_id, redispatch_after_s)
            uow.send_after_commit(RunStep(step, item.run_id))
            found.append(Redispatch(item.run_id, step, reason))
    return found
