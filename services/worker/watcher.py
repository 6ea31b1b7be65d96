"""The approval watcher: the safety net that dispatches approvals recorded without a move.

The approve command moves its run and sends ApplyPatchST itself; this pass (beat every
``APPROVAL_POLL_S``, and each reconciler pass) finds an approved run still waiting and
does the same, through the same command, so a run is moved and sent once.
"""

from __future__ import annotations

import structlog

from services.worker.runtime import Runtime
from shared.domain.run_machine import PlanApproved, RunStatus, next_step
from shared.service.runs import dispatch_approved

log = structlog.get_logger("kodo.watcher")


def watch_approvals(rt: Runtime) -> list[str]:
    # The machine names the step an approval starts (dispatch_approved sends
    # transition(...).dispatch after commit); the log says the same step.
    step = next_step(RunStatus.WAITING_INPUT, PlanApproved())
    with rt.uow() as uow:  # the step leaves after commit: no worker races the row
        run_ids = dispatch_approved(uow, now=rt.clock.now())
    for run_id in run_ids:
        log.info("watcher.dispatched", run_id=run_id, step_id=step.value if step else None)
    return run_ids
