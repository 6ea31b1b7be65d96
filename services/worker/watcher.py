"""The approval watcher: approved runs at waiting_input are moved and dispatched once."""

from __future__ import annotations

import structlog

from services.worker.runtime import Runtime
from shared.db.engine import unit_of_work
from shared.domain.run_machine import PlanApproved, RunStatus, next_step
from shared.queue import send_step
from shared.service.runs import dispatch_approved

log = structlog.get_logger("kodo.watcher")


def watch_approvals(rt: Runtime) -> list[str]:
    # The machine names the step an approval starts; asked before any run is moved.
    step = next_step(RunStatus.WAITING_INPUT, PlanApproved())
    if step is None:  # pragma: no cover - fail closed if the machine ever stops dispatching
        raise RuntimeError("run_machine: an approved plan dispatches no step")
    with unit_of_work(rt.sessions) as s:
        run_ids = dispatch_approved(s, now=rt.clock.now())
    for run_id in run_ids:  # after commit: a worker never races ahead of the row
        send_step(rt.celery, step, run_id)
        log.info("watcher.dispatched", run_id=run_id, step_id=step.value)
    return run_ids
