"""The step contract at the door of every step, and the way back in.

A run records the step contract it was started under (``runs.contract_version``). A
step compares it with its own right after it takes the step's lease, in the same
transaction: a worker whose prompts, schemas or op_key recipe differ would ask the
step's agent in other words and pay again, so instead it parks the run at
``waiting_upgrade`` (rule ``step_contract``, both versions in ``runs.error``) and
releases its lease. The reconciler of a worker whose contract is the run's resumes
the step the run was parked at (``runs.last_step``) and dispatches it after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from shared.db.repos.runs import RunRepo
from shared.db.repos.steps import StepRunRepo
from shared.domain.run_machine import (
    STEP_STATUS,
    ContractMismatch,
    RunStatus,
    StepId,
    Upgraded,
    transition,
)
from shared.service.messages import RunStep
from shared.service.uow import UnitOfWork

RULE = "step_contract"


@dataclass(frozen=True)
class Parked:
    run_id: str
    step: StepId
    run_contract: str
    worker_contract: str

    @property
    def diagnostic(self) -> str:
        return (
            f"{RULE}: the run was started under step contract {self.run_contract}; the"
            f" worker that took {self.step.value} has {self.worker_contract} (other prompts,"
            " schemas or op_key recipe), so it parked the run instead of paying for a"
            f" different prompt. A worker of contract {self.run_contract} resumes it; or"
            " cancel the run"
        )


def park_on_contract_mismatch_in(
    s: Session,
    run_id: str,
    step: StepId,
    *,
    run_contract: str | None,
    worker_contract: str,
    fence: int,
    now: datetime,
) -> Parked | None:
    """Inside the transaction that entered the step: None if the step may run.

    A run without a contract (started before runs recorded one) takes this worker's.
    """
    if run_contract is None:
        RunRepo(s).adopt_contract(run_id, worker_contract)
        return None
    if run_contract == worker_contract:
        return None
    parked = Parked(run_id, step, run_contract, worker_contract)
    move = transition(STEP_STATUS[step], ContractMismatch(step))
    if RunRepo(s).apply(run_id, move, now, step=step, error=parked.diagnostic):
        StepRunRepo(s).release(run_id, step, fence)
    return parked


@dataclass(frozen=True)
class Resumed:
    run_id: str
    step: StepId


def resume_parked(
    uow: UnitOfWork, *, worker_contract: str, now: datetime, limit: int = 100
) -> list[Resumed]:
    """Move runs parked for ``worker_contract`` back to their step and send each step
    after commit (the reconciler's command)."""
    resumed = []
    for run_id, step in uow.runs.claim_parked(worker_contract, limit):
        move = transition(RunStatus.WAITING_UPGRADE, Upgraded(step))
        if uow.runs.apply(run_id, move, now, clear_error=True):
            uow.send_after_commit(RunStep(step, run_id))
            resumed.append(Resumed(run_id, step))
    return resumed
