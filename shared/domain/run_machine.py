"""The run state machine: deterministic control, no IO, no clock, no randomness.

Given the stored status of a run and an event, :func:`transition` returns the next
status and what to dispatch. Steps (the IO seams) report events; the caller stores
the result with a guarded UPDATE and dispatches after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    COMPILING = "compiling"
    WAITING_INPUT = "waiting_input"
    APPLYING = "applying"
    DECIDING = "deciding"
    EXECUTING = "executing"
    WAITING_UPGRADE = "waiting_upgrade"  # parked: its step contract is not this worker's
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED}
)
ACTIVE = frozenset(RunStatus) - TERMINAL
AT_REST = TERMINAL | {RunStatus.WAITING_INPUT, RunStatus.WAITING_UPGRADE}
"""Statuses in which a run sends no provider call until someone moves it (an approver,
an answer, a budget, an upgraded worker, a retry): what a daemon holds open for its
worktree can be let go."""


class StepId(StrEnum):
    """The seed's immutable step ids; they name tasks, ledger rows and artifacts."""

    COMPILE = "CompileST"
    APPLY_PATCH = "ApplyPatchST"
    DECIDE = "DecideST"
    EXECUTE = "ExecuteST"


class NextAction(StrEnum):
    """What the run is waiting for; stored on the run for SQL-first triage."""

    RUN_COMPILE = "run:CompileST"
    AWAIT_APPROVAL = "await:approval"
    RUN_APPLY_PATCH = "run:ApplyPatchST"
    RUN_DECIDE = "run:DecideST"
    RUN_EXECUTE = "run:ExecuteST"
    AWAIT_ANSWER = "await:answer"  # DecideST asked the approver a question
    AWAIT_BUDGET = "await:budget"  # the next call would pass the run's budget
    AWAIT_UPGRADE = "await:upgrade"  # a worker of the run's step contract (runs.last_step)
    NONE = "none"


STEP_STATUS: dict[StepId, RunStatus] = {
    StepId.COMPILE: RunStatus.COMPILING,
    StepId.APPLY_PATCH: RunStatus.APPLYING,
    StepId.DECIDE: RunStatus.DECIDING,
    StepId.EXECUTE: RunStatus.EXECUTING,
}
"""The status a run holds while each step is its current step."""

_RUN_ACTION = {
    StepId.COMPILE: NextAction.RUN_COMPILE,
    StepId.APPLY_PATCH: NextAction.RUN_APPLY_PATCH,
    StepId.DECIDE: NextAction.RUN_DECIDE,
    StepId.EXECUTE: NextAction.RUN_EXECUTE,
}

_AFTER_STEP: dict[StepId, StepId | None] = {
    StepId.COMPILE: None,  # the approval gate sits between compile and apply
    StepId.APPLY_PATCH: StepId.DECIDE,
    StepId.DECIDE: StepId.EXECUTE,
    StepId.EXECUTE: None,
}


@dataclass(frozen=True)
class Start:
    """A run was requested for its intent."""


@dataclass(frozen=True)
class StepSucceeded:
    step: StepId


@dataclass(frozen=True)
class StepFailed:
    """A step ended for good (retries inside the step are already spent)."""

    step: StepId


@dataclass(frozen=True)
class VerificationFailed:
    """ExecuteST's command failed (a non-zero exit, a timeout, the memory limit): the
    router sends the run back to the build agent with the output while repairs are
    left (``KODO_MAX_REPAIRS``), else the run fails."""

    repairs_left: bool


@dataclass(frozen=True)
class Repaired:
    """A repair round of ApplyPatchST committed its fix: verify again with the command
    DecideST already chose (no new decision is asked for)."""


@dataclass(frozen=True)
class NothingToVerify:
    """DecideST answered ``done`` where the run's policy allows it: the run succeeds
    without running a command."""


@dataclass(frozen=True)
class Escalated:
    """DecideST asked the approver a question: the run waits for the answer."""


@dataclass(frozen=True)
class Answered:
    """The approver answered DecideST's question: DecideST decides again, with it.
    ``approved``: the run's plan is approved (a question is only asked after the gate)."""

    approved: bool


@dataclass(frozen=True)
class BudgetExhausted:
    """``step``'s next provider call would pass the run's budget: it was not sent, and
    the run waits for an approver to raise the budget (or cancel)."""

    step: StepId


@dataclass(frozen=True)
class BudgetRaised:
    """The budget was raised: ``step`` resumes (its next round). ``approved``: the plan
    is approved (no step past the gate resumes without it)."""

    step: StepId
    approved: bool


@dataclass(frozen=True)
class PlanApproved:
    pass


@dataclass(frozen=True)
class PlanRejected:
    pass


@dataclass(frozen=True)
class ChangesRequested:
    """An approver asked for another revision of the plan (with a comment): CompileST
    runs again. The revision limit is checked by the caller (``revision_refusal``)."""


@dataclass(frozen=True)
class Retried:
    """An operator resumes a failed run at ``step``, the step that failed it (the caller
    reads it from ``runs.last_step``). The only event an ended run accepts. ``approved``:
    the run's current plan is approved; no step after the gate resumes without it."""

    step: StepId
    approved: bool


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class ContractMismatch:
    """The worker about to run ``step`` builds prompts under another step contract than
    the one the run was started with: it must not pay for a different prompt."""

    step: StepId


@dataclass(frozen=True)
class Upgraded:
    """A worker of the run's step contract resumes ``step``, the one the run was parked
    at (the caller reads it from ``runs.last_step``, written by the parking update)."""

    step: StepId


Event = (
    Start
    | StepSucceeded
    | StepFailed
    | VerificationFailed
    | Repaired
    | NothingToVerify
    | Escalated
    | Answered
    | BudgetExhausted
    | BudgetRaised
    | PlanApproved
    | PlanRejected
    | ChangesRequested
    | Retried
    | Cancel
    | ContractMismatch
    | Upgraded
)


@dataclass(frozen=True)
class Transition:
    """The outcome of an event: where the run goes and which step to dispatch."""

    from_status: RunStatus
    to_status: RunStatus
    dispatch: StepId | None
    next_action: NextAction


class IllegalTransition(Exception):
    """The event does not apply to a run in this status."""

    def __init__(self, status: RunStatus, event: Event) -> None:
        super().__init__(f"{type(event).__name__} is not allowed when the run is {status.value}")
        self.status = status
        self.event = event


def _run(frm: RunStatus, step: StepId) -> Transition:
    return Transition(frm, STEP_STATUS[step], step, _RUN_ACTION[step])


def _end(frm: RunStatus, to: RunStatus) -> Transition:
    return Transition(frm, to, None, NextAction.NONE)


def transition(status: RunStatus, event: Event) -> Transition:
    """Return the transition for ``event`` in ``status`` or raise IllegalTransition."""
    if isinstance(event, Retried) and status is RunStatus.FAILED:
        if event.step is StepId.COMPILE or event.approved:
            return _run(status, event.step)
        raise IllegalTransition(status, event)
    if status.is_terminal:
        raise IllegalTransition(status, event)
    match event:
        case Cancel():
            return _end(status, RunStatus.CANCELLED)
        case Start() if status is RunStatus.QUEUED:
            return _run(status, StepId.COMPILE)
        case PlanApproved() if status is RunStatus.WAITING_INPUT:
            return _run(status, StepId.APPLY_PATCH)
        case PlanRejected() if status is RunStatus.WAITING_INPUT:
            return _end(status, RunStatus.REJECTED)
        case ChangesRequested() if status is RunStatus.WAITING_INPUT:
            return _run(status, StepId.COMPILE)
        case StepSucceeded(step=step) if STEP_STATUS[step] is status:
            if step is StepId.COMPILE:
                return Transition(status, RunStatus.WAITING_INPUT, None, NextAction.AWAIT_APPROVAL)
            following = _AFTER_STEP[step]
            if following is None:
                return _end(status, RunStatus.SUCCEEDED)
            return _run(status, following)
        case StepFailed(step=step) if STEP_STATUS[step] is status:
            return _end(status, RunStatus.FAILED)
        case VerificationFailed(repairs_left=True) if status is RunStatus.EXECUTING:
            return _run(status, StepId.APPLY_PATCH)
        case VerificationFailed(repairs_left=False) if status is RunStatus.EXECUTING:
            return _end(status, RunStatus.FAILED)
        case Repaired() if status is RunStatus.APPLYING:
            return _run(status, StepId.EXECUTE)
        case NothingToVerify() if status is RunStatus.DECIDING:
            return _end(status, RunStatus.SUCCEEDED)
        case Escalated() if status is RunStatus.DECIDING:
            return Transition(status, RunStatus.WAITING_INPUT, None, NextAction.AWAIT_ANSWER)
        case Answered(approved=True) if status is RunStatus.WAITING_INPUT:
            return _run(status, StepId.DECIDE)
        case BudgetExhausted(step=step) if STEP_STATUS[step] is status:
            return Transition(status, RunStatus.WAITING_INPUT, None, NextAction.AWAIT_BUDGET)
        case BudgetRaised(step=step, approved=approved) if status is RunStatus.WAITING_INPUT:
            if step is StepId.COMPILE or approved:
                return _run(status, step)
        case ContractMismatch(step=step) if STEP_STATUS[step] is status:
            return Transition(status, RunStatus.WAITING_UPGRADE, None, NextAction.AWAIT_UPGRADE)
        case Upgraded(step=step) if status is RunStatus.WAITING_UPGRADE:
            return _run(status, step)
    raise IllegalTransition(status, event)


def next_step(status: RunStatus, event: Event) -> StepId | None:
    """The step to dispatch once ``event`` is stored for a run in ``status`` (None: none).

    Callers that send work ask this instead of naming a step: the order of steps, and
    the approval gate between CompileST and ApplyPatchST, live in :func:`transition` alone.
    """
    return transition(status, event).dispatch


def current_step(status: RunStatus) -> StepId | None:
    """The step a run in ``status`` is executing, if any."""
    for step, step_status in STEP_STATUS.items():
        if step_status is status:
            return step
    return None
