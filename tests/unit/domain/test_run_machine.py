"""The run state machine, specified exhaustively: every legal move and every refusal."""

from __future__ import annotations

import itertools

import pytest

from shared.domain.run_machine import (
    ACTIVE,
    STEP_STATUS,
    TERMINAL,
    Answered,
    BudgetExhausted,
    BudgetRaised,
    Cancel,
    ChangesRequested,
    ContractMismatch,
    Escalated,
    Event,
    IllegalTransition,
    NextAction,
    NothingToVerify,
    PlanApproved,
    PlanRejected,
    Repaired,
    Retried,
    RunStatus,
    Start,
    StepFailed,
    StepId,
    StepSucceeded,
    Upgraded,
    VerificationFailed,
    current_step,
    next_step,
    transition,
)

S = RunStatus
RUN_ACTION = {
    StepId.COMPILE: NextAction.RUN_COMPILE,
    StepId.APPLY_PATCH: NextAction.RUN_APPLY_PATCH,
    StepId.DECIDE: NextAction.RUN_DECIDE,
    StepId.EXECUTE: NextAction.RUN_EXECUTE,
}
ALL_EVENTS: list[Event] = [
    Start(),
    PlanApproved(),
    PlanRejected(),
    ChangesRequested(),
    VerificationFailed(repairs_left=True),
    VerificationFailed(repairs_left=False),
    Repaired(),
    NothingToVerify(),
    Escalated(),
    Answered(approved=True),
    Answered(approved=False),
    Cancel(),
    *(StepSucceeded(step) for step in StepId),
    *(StepFailed(step) for step in StepId),
    *(ContractMismatch(step) for step in StepId),
    *(Upgraded(step) for step in StepId),
    *(Retried(step, approved) for step in StepId for approved in (True, False)),
    *(BudgetExhausted(step) for step in StepId),
    *(BudgetRaised(step, approved) for step in StepId for approved in (True, False)),
]

LEGAL: dict[tuple[RunStatus, Event], tuple[RunStatus, StepId | None, NextAction]] = {
    (S.QUEUED, Start()): (S.COMPILING, StepId.COMPILE, NextAction.RUN_COMPILE),
    (S.COMPILING, StepSucceeded(StepId.COMPILE)): (
        S.WAITING_INPUT,
        None,
        NextAction.AWAIT_APPROVAL,
    ),
    (S.COMPILING, StepFailed(StepId.COMPILE)): (S.FAILED, None, NextAction.NONE),
    (S.WAITING_INPUT, PlanApproved()): (S.APPLYING, StepId.APPLY_PATCH, NextAction.RUN_APPLY_PATCH),
    (S.WAITING_INPUT, PlanRejected()): (S.REJECTED, None, NextAction.NONE),
    # Request changes: the plan goes back to CompileST for another revision.
    (S.WAITING_INPUT, ChangesRequested()): (S.COMPILING, StepId.COMPILE, NextAction.RUN_COMPILE),
    (S.APPLYING, StepSucceeded(StepId.APPLY_PATCH)): (
        S.DECIDING,
        StepId.DECIDE,
        NextAction.RUN_DECIDE,
    ),
    (S.APPLYING, StepFailed(StepId.APPLY_PATCH)): (S.FAILED, None, NextAction.NONE),
    (S.DECIDING, StepSucceeded(StepId.DECIDE)): (
        S.EXECUTING,
        StepId.EXECUTE,
        NextAction.RUN_EXECUTE,
    ),
    (S.DECIDING, StepFailed(StepId.DECIDE)): (S.FAILED, None, NextAction.NONE),
    (S.EXECUTING, StepSucceeded(StepId.EXECUTE)): (S.SUCCEEDED, None, NextAction.NONE),
    (S.EXECUTING, StepFailed(StepId.EXECUTE)): (S.FAILED, None, NextAction.NONE),
    # A failed verification goes back to the build agent while repairs are left; a repair
    # is verified again with the command already decided.
    (S.EXECUTING, VerificationFailed(repairs_left=True)): (
        S.APPLYING,
        StepId.APPLY_PATCH,
        NextAction.RUN_APPLY_PATCH,
    ),
    (S.EXECUTING, VerificationFailed(repairs_left=False)): (S.FAILED, None, NextAction.NONE),
    (S.APPLYING, Repaired()): (S.EXECUTING, StepId.EXECUTE, NextAction.RUN_EXECUTE),
    # DecideST's other routes: nothing to verify (where policy allows), or a question.
    (S.DECIDING, NothingToVerify()): (S.SUCCEEDED, None, NextAction.NONE),
    (S.DECIDING, Escalated()): (S.WAITING_INPUT, None, NextAction.AWAIT_ANSWER),
    (S.WAITING_INPUT, Answered(approved=True)): (S.DECIDING, StepId.DECIDE, NextAction.RUN_DECIDE),
    **{(status, Cancel()): (S.CANCELLED, None, NextAction.NONE) for status in sorted(ACTIVE)},
    # A step whose contract differs from the run's parks it; a matching worker resumes it.
    **{
        (S(STEP_STATUS[step]), ContractMismatch(step)): (
            S.WAITING_UPGRADE,
            None,
            NextAction.AWAIT_UPGRADE,
        )
        for step in StepId
    },
    **{
        (S.WAITING_UPGRADE, Upgraded(step)): (STEP_STATUS[step], step, RUN_ACTION[step])
        for step in StepId
    },
    # An operator resumes a failed run at the step that failed it.
    **{
        (S.FAILED, Retried(step, approved=True)): (STEP_STATUS[step], step, RUN_ACTION[step])
        for step in StepId
    },
    # A call that would pass the budget is not sent: the run waits; raising it resumes.
    **{
        (STEP_STATUS[step], BudgetExhausted(step)): (
            S.WAITING_INPUT,
            None,
            NextAction.AWAIT_BUDGET,
        )
        for step in StepId
    },
    **{
        (S.WAITING_INPUT, BudgetRaised(step, approved=True)): (
            STEP_STATUS[step],
            step,
            RUN_ACTION[step],
        )
        for step in StepId
    },
    (S.WAITING_INPUT, BudgetRaised(StepId.COMPILE, approved=False)): (
        S.COMPILING,
        StepId.COMPILE,
        NextAction.RUN_COMPILE,
    ),
    (S.FAILED, Retried(StepId.COMPILE, approved=False)): (
        S.COMPILING,
        StepId.COMPILE,
        NextAction.RUN_COMPILE,
    ),
}


@pytest.mark.parametrize(("status", "event"), list(LEGAL), ids=str)
def test_each_legal_event_moves_the_run_and_names_what_to_dispatch(
    status: RunStatus, event: Event
) -> None:
    move = transition(status, event)
    assert (move.to_status, move.dispatch, move.next_action) == LEGAL[(status, event)]
    assert move.from_status is status


ILLEGAL = [
    (status, event)
    for status, event in itertools.product(RunStatus, ALL_EVENTS)
    if (status, event) not in LEGAL
]


@pytest.mark.parametrize(("status", "event"), ILLEGAL, ids=str)
def test_every_other_event_is_refused(status: RunStatus, event: Event) -> None:
    with pytest.raises(IllegalTransition):
        transition(status, event)


def test_the_tables_cover_every_status_and_event_pair() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(RunStatus) * len(ALL_EVENTS)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_terminal_run_accepts_nothing_not_even_cancel(status: RunStatus) -> None:
    assert status.is_terminal
    with pytest.raises(IllegalTransition, match=status.value):
        transition(status, Cancel())


@pytest.mark.parametrize("status", sorted(TERMINAL - {S.FAILED}))
def test_only_a_failed_run_can_be_retried(status: RunStatus) -> None:
    with pytest.raises(IllegalTransition):
        transition(status, Retried(StepId.EXECUTE, approved=True))


@pytest.mark.parametrize("step", [StepId.APPLY_PATCH, StepId.DECIDE, StepId.EXECUTE])
def test_a_retry_never_takes_an_unapproved_run_past_the_gate(step: StepId) -> None:
    with pytest.raises(IllegalTransition):
        transition(S.FAILED, Retried(step, approved=False))


def test_no_step_runs_before_approval_except_compile() -> None:
    reachable_before_approval = {S.QUEUED, S.COMPILING, S.WAITING_INPUT}
    dispatched = {
        LEGAL[key][1]
        for key in LEGAL
        if key[0] in reachable_before_approval
        and key[1] not in (PlanApproved(), Answered(approved=True))  # both say: approved
        and not (isinstance(key[1], BudgetRaised) and key[1].approved)
    }
    assert dispatched <= {StepId.COMPILE, None}


def test_the_happy_path_walks_every_step_in_order() -> None:
    status, dispatched = S.QUEUED, []
    path: list[Event] = [
        Start(),
        StepSucceeded(StepId.COMPILE),
        PlanApproved(),
        StepSucceeded(StepId.APPLY_PATCH),
        StepSucceeded(StepId.DECIDE),
        StepSucceeded(StepId.EXECUTE),
    ]
    for event in path:
        move = transition(status, event)
        status = move.to_status
        if move.dispatch:
            dispatched.append(move.dispatch)
    assert status is S.SUCCEEDED
    assert dispatched == list(StepId)


@pytest.mark.parametrize("step", list(StepId))
def test_each_step_has_exactly_one_running_status(step: StepId) -> None:
    statuses = [s for s in RunStatus if current_step(s) is step]
    assert len(statuses) == 1


def test_a_parked_run_resumes_the_step_it_was_parked_at_and_may_be_cancelled() -> None:
    parked = transition(S.APPLYING, ContractMismatch(StepId.APPLY_PATCH))
    assert parked.to_status is S.WAITING_UPGRADE
    assert parked.dispatch is None, "nothing runs until a worker of the run's contract comes"
    assert not S.WAITING_UPGRADE.is_terminal
    resumed = transition(parked.to_status, Upgraded(StepId.APPLY_PATCH))
    assert (resumed.to_status, resumed.dispatch) == (S.APPLYING, StepId.APPLY_PATCH)
    assert transition(S.WAITING_UPGRADE, Cancel()).to_status is S.CANCELLED


def test_statuses_without_a_step_report_none() -> None:
    assert [s for s in RunStatus if current_step(s) is None] == [
        S.QUEUED,
        S.WAITING_INPUT,
        S.WAITING_UPGRADE,
        *sorted(TERMINAL, key=list(RunStatus).index),
    ]


@pytest.mark.parametrize(("status", "event"), list(LEGAL), ids=str)
def test_the_next_step_to_send_is_the_one_the_machine_names(
    status: RunStatus, event: Event
) -> None:
    assert next_step(status, event) == LEGAL[(status, event)][1]


def test_an_approved_plan_sends_the_step_after_the_gate_and_no_other() -> None:
    assert next_step(S.WAITING_INPUT, PlanApproved()) is StepId.APPLY_PATCH
    with pytest.raises(IllegalTransition):
        next_step(S.APPLYING, PlanApproved())  # nothing is sent for an illegal event


def test_a_failing_verification_is_repaired_then_verified_again_until_repairs_run_out() -> None:
    status = S.EXECUTING
    walked = []
    for left in (True, True, False):
        back = transition(status, VerificationFailed(repairs_left=left))
        walked.append(back.to_status)
        if not left:
            break
        verify = transition(back.to_status, Repaired())
        walked.append(verify.to_status)
        status = verify.to_status
    assert walked == [S.APPLYING, S.EXECUTING, S.APPLYING, S.EXECUTING, S.FAILED]
