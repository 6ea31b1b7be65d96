"""The run commands: one function per thing a person or a timer asks of a run.

Each takes an open :class:`~shared.service.uow.UnitOfWork`, changes rows through its
repositories and queues what must be sent (a step, an abort) in its outbox; the entry
point's unit of work commits, then sends. Views, tasks, the CLI, the bench and tests
call these functions, never the repositories or the queue themselves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from shared.db.models import Intent, Run
from shared.db.repos.approvals import Decided
from shared.db.repos.runs import IntentRepo, RunRepo, budget_of
from shared.domain.budget import Budget, Estimate
from shared.domain.policy import PolicyError
from shared.domain.rounds import (
    BUDGET,
    RETRY,
    Answer,
    ChangeRequest,
    WaitingQuestion,
    comment_refusal,
    effective_input,
    retry_input,
    revision_refusal,
)
from shared.domain.run_machine import (
    Answered,
    BudgetRaised,
    Cancel,
    ChangesRequested,
    IllegalTransition,
    NextAction,
    PlanApproved,
    PlanRejected,
    Retried,
    RunStatus,
    Start,
    StepId,
    Transition,
    transition,
)
from shared.domain.step_contract import step_contract_version
from shared.domain.vocab import Decision
from shared.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidPolicy,
    NotFound,
    RepoNotAllowed,
)
from shared.git_dir import GIT_DIR_RULE, alternates_refusal, git_dir_refusal
from shared.gitcmd import LazyFetchConfig
from shared.hashing import canonical_json, sha256_hex
from shared.real_path import resolved
from shared.service.messages import AbortCalls, RunStep
from shared.service.repo_pin import Pinned, UnknownBaseRef, observe_repo, pin_submission
from shared.service.uow import UnitOfWork


def resolve_repo(repo_path: str, roots: tuple[Path, ...]) -> Path:
    """The repository's real path, if it is a git work tree under an allowed root."""
    if not roots:
        raise RepoNotAllowed("no repository is allowed: set KODO_REPO_ROOTS")
    path = Path(repo_path)
    if not path.is_absolute():
        raise InvalidInput("repo must be an absolute path", details={"repo": ["not absolute"]})
    real = resolved(path)
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise RepoNotAllowed(f"{repo_path} is outside KODO_REPO_ROOTS")
    if not (real / ".git").exists():
        raise InvalidInput(f"{repo_path} is not a git repository", details={"repo": ["not git"]})
    why = git_dir_refusal(real) or alternates_refusal(real / ".git", roots)  # a .git
    # leading elsewhere is another repository; a store borrowed from outside, another's
    if why is not None:
        raise InvalidInput(why, details={"repo": [GIT_DIR_RULE]})
    return real


def pin_intent(repo: Path, *, base_ref: str, policy_ref: str | None = None) -> Pinned:
    """What an intent on ``repo`` pins now (git only, no database: pin before opening
    the transaction, so no connection waits on git).

    The repository's real path and device/inode, the commit ``base_ref`` resolves to,
    and the strictest combination of the policy at the trusted ref (``policy_ref``, else
    the repository's default branch) and at ``base_ref``.
    """
    pin = observe_repo(repo)
    if pin is None:
        raise InvalidInput(f"{repo} is gone", details={"repo": ["not found"]})
    try:
        return pin_submission(pin, base_ref, policy_ref)
    except UnknownBaseRef as exc:
        raise InvalidInput(str(exc), details={"baseRef": ["unknown ref"]}) from exc
    except LazyFetchConfig as exc:
        raise InvalidInput(str(exc), details={"repo": [exc.rule]}) from exc
    except PolicyError as exc:
        raise InvalidPolicy(str(exc), details={"policy": [str(exc)]}) from exc


def intent_request_sha256(pinned: Pinned, goal: str) -> str:
    """The digest of what a submit asked for (the repository's real path, goal, base_ref)."""
    request = {"repo": pinned.repo.path, "goal": goal, "base_ref": pinned.base_ref}
    return sha256_hex(canonical_json(request))


def replayed_intent(
    s: Session, *, submitted_by: str, idempotency_key: str, request_sha256: str
) -> Intent | None:
    """The intent an earlier submit with this key made, or None; Conflict if that
    submit asked for something else (a key names one request, never two)."""
    earlier = IntentRepo(s).by_idempotency_key(submitted_by, idempotency_key)
    if earlier is None:
        return None
    if earlier.request_sha256 != request_sha256:
        raise Conflict(
            "this Idempotency-Key was used for another request (another repository, goal or"
            " base_ref): use a new key for a new request",
            details={"rule": ["idempotency_key_reused"], "intent_id": [earlier.id]},
        )
    return earlier


def record_intent(
    uow: UnitOfWork,
    pinned: Pinned,
    *,
    goal: str,
    submitted_by: str | None,
    idempotency_key: str | None = None,
    budget: tuple[int | None, int | None] = (None, None),
) -> Intent:
    """Store an intent pinned by :func:`pin_intent`; sends nothing. ``budget`` is what
    its run may spend (micro-dollars, tokens; None: no budget in that dimension)."""
    intent = Intent(
        id=str(uuid.uuid4()),
        repo_path=pinned.repo.path,
        goal=goal,
        base_ref=pinned.base_ref,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key,
        request_sha256=intent_request_sha256(pinned, goal),
        base_commit=pinned.base_commit,
        repo_device=pinned.repo.device,
        repo_inode=pinned.repo.inode,
        policy=pinned.policy.to_json(),
        budget_usd_micro=budget[0],
        budget_tokens=budget[1],
    )
    return uow.intents.add(intent)


def submit_intent(
    uow: UnitOfWork,
    *,
    repo: Path,
    goal: str,
    base_ref: str,
    submitted_by: str | None,
    policy_ref: str | None = None,
) -> Intent:
    """:func:`pin_intent` then :func:`record_intent`; sends nothing."""
    pinned = pin_intent(repo, base_ref=base_ref, policy_ref=policy_ref)
    return record_intent(uow, pinned, goal=goal, submitted_by=submitted_by)


@dataclass(frozen=True)
class Started:
    """The intent's run as :func:`start_run` left it (what ``POST /intents/<id>/run``
    reports)."""

    id: str
    status: str
    created: bool


def start_run(uow: UnitOfWork, intent_id: str, *, app_version: str, now: datetime) -> Started:
    """Create the intent's run (workflow id == intent id) once and send its first step.

    A repeat returns the run and sends nothing; an ended run is a conflict. The run
    records this code's step contract: every step compares its own with it before it
    enters (``shared.service.contract``). No ORM load: the insert reads the intent's row
    itself and stores the run already where the machine's start moves it (one statement;
    a repeat reads the run's status too).
    """
    move = transition(RunStatus.QUEUED, Start())
    made = uow.runs.create_started(
        intent_id, move, now, app_version=app_version, contract_version=step_contract_version()
    )
    if made:
        if move.dispatch is not None:
            uow.send_after_commit(RunStep(move.dispatch, intent_id))
        return Started(intent_id, move.to_status.value, created=True)
    status = uow.runs.status_of(intent_id)
    if status is None:  # no run was made and none exists: there is no such intent
        raise NotFound(f"intent {intent_id} not found")
    if RunStatus(status).is_terminal:
        raise Conflict(
            going_again(intent_id, RunStatus(status)),
            details={"rule": ["one_run_per_intent"], "status": [status]},
        )
    return Started(intent_id, status, created=False)


def going_again(run_id: str, status: RunStatus) -> str:
    """What to do instead of starting an intent's run again (one run per intent: the
    workflow id is the intent id, so its ledger and branch are the run's alone)."""
    said = f"run {run_id} already ended ({status.value}); an intent has one run (its id)."
    if status is RunStatus.FAILED:
        return (
            f"{said} Resume it at the step that failed: POST /runs/{run_id}/retry (an admin;"
            f" `kodo run retry {run_id}`), or submit a new intent"
        )
    return f"{said} To go again, submit a new intent (POST /intents)"


def get_run(s: Session, run_id: str) -> Run:
    """The run, or NotFound (a read: no unit of work needed)."""
    run = RunRepo(s).get(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def approve_plan(
    uow: UnitOfWork,
    run_id: str,
    *,
    approver: str,
    now: datetime,
    plan_sha256: str | None = None,
    comment: str | None = None,
    allow_self_approval: bool = False,
    dispatch: bool = True,
) -> Decided:
    """Approve the run's current plan, move the run to ``applying`` and send ApplyPatchST.

    One transaction records the approval and moves the run; ApplyPatchST leaves after
    commit. ``dispatch=False`` records the approval alone and leaves the move and the
    send to the approval watcher (the bench's beat-only path, and tests of that safety
    net). A repeated identical approval is accepted again and sends nothing new. The
    submitter may not approve their own run unless the operator allows it
    (``KODO_ALLOW_SELF_APPROVAL``): two people stand between an intent and its change.
    """
    row, new = _decide(
        uow,
        run_id,
        decision=Decision.APPROVED,
        approver=approver,
        plan_sha256=plan_sha256,
        comment=comment,
        allow_self_approval=allow_self_approval,
        dispatched=dispatch,
    )
    if dispatch and new:
        # the run's row is locked and waits on this very plan (_decide checked both)
        move = transition(RunStatus.WAITING_INPUT, PlanApproved())
        if not uow.runs.apply(run_id, move, now):  # pragma: no cover - checked under lock
            raise Conflict(f"run {run_id} moved while its approval was recorded")
        if move.dispatch is not None:
            uow.send_after_commit(RunStep(move.dispatch, run_id))
    elif dispatch:  # a repeat: an earlier approval recorded without a dispatch goes now
        dispatch_approved(uow, now=now, run_id=run_id)
    return row


def reject_plan(
    uow: UnitOfWork,
    run_id: str,
    *,
    approver: str,
    now: datetime,
    plan_sha256: str | None = None,
    comment: str | None = None,
) -> Decided:
    """Reject the run's current plan; the run ends ``rejected`` in the same transaction.

    Sends nothing. A repeated identical rejection is accepted again.
    """
    row, new = _decide(
        uow,
        run_id,
        decision=Decision.REJECTED,
        approver=approver,
        plan_sha256=plan_sha256,
        comment=comment,
    )
    if new:
        uow.runs.apply(run_id, transition(RunStatus.WAITING_INPUT, PlanRejected()), now)
    return row


@dataclass(frozen=True)
class Revising:
    """A request for changes recorded: the decision row and the revision now compiling."""

    decision: Decided
    revision: int
    new: bool


def request_changes(
    uow: UnitOfWork,
    run_id: str,
    *,
    approver: str,
    comment: str | None,
    now: datetime,
    max_revisions: int,
    lease_s: float,
    plan_sha256: str | None = None,
) -> Revising:
    """Send the run's current plan back to CompileST with the reviewer's comment.

    One transaction, under the run's row lock: the decision on this exact digest
    (``changes_requested``, which no approval can follow), CompileST's next round with
    its input (the comment, the plan it revises, every earlier digest), and the move to
    ``compiling``; CompileST leaves after commit. A repeat of the same request is
    accepted again and starts nothing. Refused (409) past ``max_revisions`` plans.
    """
    refused = comment_refusal(comment)
    if refused is not None or comment is None:
        raise InvalidInput(refused or "", details={"comment": [refused or "missing"]})
    run = uow.runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    earlier = tuple(uow.artifacts.plan_digests(run_id))
    revisions = len(earlier)
    if run.status == RunStatus.WAITING_INPUT.value:  # a repeat is answered by _decide
        limit = revision_refusal(revisions, max_revisions)
        if limit is not None:
            raise Conflict(limit, details={"rule": ["revision_limit"], "revisions": [revisions]})
    previous = run.plan_sha256
    row, new = _decide(
        uow,
        run_id,
        decision=Decision.CHANGES_REQUESTED,
        approver=approver,
        plan_sha256=plan_sha256,
        comment=comment,
    )
    if not new:  # the revision this request started is compiling (or has landed)
        return Revising(row, revisions + 1, new=False)
    if previous is None:  # pragma: no cover - _decide refuses a run without a plan
        raise Conflict(f"run {run_id} has no plan")
    request = ChangeRequest(
        revision=revisions + 1,
        comment=comment,
        requested_by=approver,
        previous_plan_sha256=previous,
        earlier_plans=earlier,
    )
    started = uow.steps.new_round(
        run_id, StepId.COMPILE, round_input=request.to_json(), lease_s=lease_s
    )
    if started is None:  # pragma: no cover - a run waiting on a plan compiled it
        raise Conflict(f"run {run_id}: CompileST has no ended checkpoint to start again")
    move = transition(RunStatus.WAITING_INPUT, ChangesRequested())
    if not uow.runs.apply(run_id, move, now, clear_error=True):  # pragma: no cover - locked
        raise Conflict(f"run {run_id} moved while changes were requested")
    if move.dispatch is not None:
        uow.send_after_commit(RunStep(move.dispatch, run_id))
    return Revising(row, request.revision, new=True)


def _decide(
    uow: UnitOfWork,
    run_id: str,
    *,
    decision: Decision,
    approver: str,
    plan_sha256: str | None,
    comment: str | None,
    allow_self_approval: bool = False,
    dispatched: bool = False,
) -> tuple[Decided, bool]:
    """Record a decision on the run's current plan under the run's row lock; (row, new).
    Three statements, no ORM object: the gate (the run locked, its submitter, the
    decision already on its plan), the insert, and the caller's move."""
    gate = uow.approvals.gate(run_id)
    if gate is None:
        raise NotFound(f"run {run_id} not found")
    if gate.next_action == NextAction.AWAIT_BUDGET.value:
        raise Conflict(
            f"run {run_id} waits for a larger budget, not a decision on its plan: raise it"
            f" (POST /runs/{run_id}/budget) or cancel the run",
            details={"rule": ["budget_waiting"]},
        )
    if gate.next_action == NextAction.AWAIT_ANSWER.value:
        raise Conflict(
            f"run {run_id} waits for an answer to DecideST's question, not a decision on its"
            f" plan: answer it (POST /runs/{run_id}/answer) or cancel the run",
            details={"rule": ["question_waiting"]},
        )
    approve = decision is Decision.APPROVED
    earlier = gate.earlier
    if (
        earlier is None
        and gate.plan_sha256 is not None
        and gate.status != RunStatus.WAITING_INPUT.value
    ):
        # The lock may have waited for a decision's commit: the locked row is read anew
        # then, the joined decision is not (read committed), so it is read again here.
        earlier = uow.approvals.decision_on(gate.run_id, gate.plan_sha256)
    if plan_sha256 is not None and gate.plan_sha256 is not None and plan_sha256 != gate.plan_sha256:
        raise Conflict(
            "the plan changed: planSha256 does not match the current plan",
            details={"currentPlanSha256": gate.plan_sha256},
        )
    # (before any answer, a repeat included: the submitter approving after another
    # approver had been told 200, "accepted", and the audit said done; helper-118)
    if approve and not allow_self_approval and gate.submitted_by == approver:
        raise Forbidden(
            f"self-approval is refused: {approver!r} submitted this run, so another"
            " approver must approve it (the operator may allow it: KODO_ALLOW_SELF_APPROVAL=1)",
            details={"rule": ["no_self_approval"]},
        )
    if gate.plan_sha256 is not None and earlier is not None:
        return _repeated(earlier, decision, gate.status, comment, approver), False
    if gate.status != RunStatus.WAITING_INPUT.value or gate.plan_sha256 is None:
        raise Conflict(f"run {gate.run_id} is {gate.status}, not waiting_input")
    row, new = uow.approvals.record(
        gate.run_id,
        gate.plan_sha256,
        decision=decision,
        approver=approver,
        comment=comment,
        dispatched=dispatched and approve,
    )
    return (row, True) if new else (_repeated(row, decision, gate.status, comment, approver), False)


def _repeated(
    earlier: Decided, decision: Decision, status: str, comment: str | None, approver: str
) -> Decided:
    """A decision already recorded on the plan: the same one by the same person is
    answered again (it is the record: a retried request is safe), another is refused, and
    so is the same one with another comment (a second reviewer's request for changes on
    a plan already sent back was answered 200 and their comment reached nobody: red-team
    helper-97) or by another person (told "accepted" for a decision that was not
    theirs: helper-118)."""
    if earlier.decision == Decision.CHANGES_REQUESTED and decision != earlier.decision:
        raise Conflict(
            f"changes were requested on this plan; the run is {status}: decide on"
            " the revised plan once the run is waiting_input again",
            details={"rule": ["plan_superseded"], "status": [status]},
        )
    if earlier.decision != decision:
        raise Conflict(f"the plan was already {earlier.decision}")
    if comment is not None and comment != earlier.comment:
        raise Conflict(
            f"the plan was already {earlier.decision} by {earlier.approver}, with another"
            " comment: yours was not sent; comment on the next plan, or on the run",
            details={"rule": ["decision_recorded"], "approver": [earlier.approver]},
        )
    if earlier.approver != approver:
        raise Conflict(
            f"the plan was already {earlier.decision} by {earlier.approver}: nothing of"
            " yours was recorded",
            details={"rule": ["decision_recorded"], "approver": [earlier.approver]},
        )
    return earlier


@dataclass(frozen=True)
class Answering:
    """An answer recorded: the run deciding again with it."""

    run: Run
    question: str
    answer: str
    answered_by: str


def answer_question(
    uow: UnitOfWork,
    run_id: str,
    *,
    approver: str,
    answer: str | None,
    now: datetime,
    lease_s: float,
    question_sha256: str | None,
) -> Answering:
    """Answer the question DecideST escalated; DecideST decides again with every answer.

    Under the run's row lock: DecideST's next round quotes the questions and answers so
    far, and the run moves from ``waiting_input`` (next action ``await:answer``) back to
    ``deciding``; DecideST is sent after commit. 409 unless the run waits for an answer,
    and (rule ``question_superseded``) unless ``question_sha256`` is the waiting
    question's digest (WaitingQuestion): an answer is for the question it was typed
    under, never for one asked since.
    """
    refused = comment_refusal(answer)
    if refused is not None or answer is None:
        raise InvalidInput(
            (refused or "").replace("comment", "answer"), details={"comment": [refused or ""]}
        )
    run = uow.runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if run.next_action != NextAction.AWAIT_ANSWER.value:
        raise Conflict(
            f"run {run_id} is {run.status} ({run.next_action}): no question waits for an answer",
            details={"rule": ["no_question"], "next_action": [run.next_action]},
        )
    decide = uow.steps.get(run_id, StepId.DECIDE)
    waiting = WaitingQuestion.of(decide.output, decide.round_input) if decide is not None else None
    if waiting is None:  # pragma: no cover - Escalated needs a question
        raise Conflict(f"run {run_id} records no question")
    if question_sha256 is None or question_sha256.lower() != waiting.sha256:
        raise Conflict(
            f"question_superseded: the answer was written for question {question_sha256}"
            f" but run {run_id} waits for an answer to question {waiting.sha256}: read it"
            " (GET /runs/{id}: question, questionSha256) and answer that one",
            details={"rule": ["question_superseded"], "questionSha256": [waiting.sha256]},
        )
    question = waiting.text
    move = transition(RunStatus.WAITING_INPUT, Answered(approved=_plan_approved(uow, run)))
    earlier = effective_input(decide.round_input if decide is not None else None)
    before = (
        Answer.from_json(earlier).exchanges
        if earlier and earlier.get("kind") == Answer.KIND
        else ()
    )
    started = uow.steps.new_round(
        run_id,
        StepId.DECIDE,
        round_input=Answer((*before, (question, answer)), approver).to_json(),
        lease_s=lease_s,
    )
    if started is None:  # pragma: no cover - an escalated DecideST ended
        raise Conflict(f"run {run_id}: DecideST has no ended checkpoint to start again")
    if not uow.runs.apply(run_id, move, now):  # pragma: no cover - locked
        raise Conflict(f"run {run_id} moved while it was answered")
    uow.runs.reload(run)
    if move.dispatch is not None:
        uow.send_after_commit(RunStep(move.dispatch, run_id))
    return Answering(run, question, answer, approver)


def _plan_approved(uow: UnitOfWork, run: Run) -> bool:
    """Whether the run's current plan digest is approved (steps past the gate need it)."""
    decided = uow.approvals.decision_on(run.id, run.plan_sha256) if run.plan_sha256 else None
    return decided is not None and decided.decision == Decision.APPROVED.value


def _stopped_step(run: Run) -> StepId:
    """The step a stopped run (failed, or waiting on its budget) stopped at."""
    step = StepId(run.last_step) if run.last_step in set(StepId) else None
    if step is None:  # pragma: no cover - a run stops only through a step's outcome
        raise Conflict(f"run {run.id} stopped at no known step ({run.last_step})")
    return step


def _resume(
    uow: UnitOfWork,
    run: Run,
    step: StepId,
    move: Transition,
    *,
    by: str,
    kind: str,
    now: datetime,
    lease_s: float,
) -> int:
    """Start ``step``'s next round (asked what its last round was asked, through any
    earlier resumptions; ``kind`` says why: a retry or a raised budget) and store
    ``move``; the step is sent after commit. Returns the round."""
    checkpoint = uow.steps.get(run.id, step)
    started = uow.steps.new_round(
        run.id,
        step,
        round_input=retry_input(
            by,
            run.error,
            checkpoint.round_input if checkpoint is not None else None,
            kind=kind,
        ),
        lease_s=lease_s,
    )
    if started is None:  # pragma: no cover - a stopped run's step ended
        raise Conflict(f"run {run.id}: {step.value} has no ended checkpoint to resume")
    if not uow.runs.apply(run.id, move, now, clear_error=True):  # pragma: no cover - locked
        raise Conflict(f"run {run.id} moved while it was resumed")
    if move.dispatch is not None:
        uow.send_after_commit(RunStep(move.dispatch, run.id))
    return started


def run_budget(run: Run) -> Budget:
    """The run's budget as the pure core reads it."""
    return budget_of(run)


@dataclass(frozen=True)
class Budgeted:
    """A run's budget after a change, and the step it resumed (None: it was not waiting)."""

    run: Run
    resumed: StepId | None

    @property
    def budget(self) -> Budget:
        return run_budget(self.run)


def set_budget(
    uow: UnitOfWork,
    run_id: str,
    *,
    approver: str,
    usd_micro: int | None,
    tokens: int | None,
    estimate: Estimate,
    now: datetime,
    lease_s: float,
) -> Budgeted:
    """Set the run's budget (an omitted dimension stays as it is); a run stopped on its
    budget resumes its step (the step's next round) if the next call now fits.

    Under the run's row lock, with the reservations of calls in flight counted. 409 for
    an ended run, and for a stopped run whose next call would still not fit.
    """
    run = uow.runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if RunStatus(run.status).is_terminal:
        raise Conflict(f"run {run_id} already ended ({run.status})")
    if usd_micro is not None:
        run.budget_usd_micro = usd_micro
    if tokens is not None:
        run.budget_tokens = tokens
    uow.session.flush()
    if run.next_action != NextAction.AWAIT_BUDGET.value:
        return Budgeted(run, None)
    budget = run_budget(run)
    if not budget.admits(estimate):
        raise Conflict(
            budget.refusal(estimate).replace("was not sent", "still would not fit"),
            details={"rule": ["budget"], "budget": [budget.to_json()]},
        )
    step = _stopped_step(run)
    move = transition(
        RunStatus.WAITING_INPUT, BudgetRaised(step, approved=_plan_approved(uow, run))
    )
    _resume(uow, run, step, move, by=approver, kind=BUDGET, now=now, lease_s=lease_s)
    uow.runs.reload(run)
    return Budgeted(run, step)


@dataclass(frozen=True)
class Retrying:
    """A failed run resumed: the step it resumes at and that step's round."""

    run: Run
    step: StepId
    round: int


def retry_run(
    uow: UnitOfWork, run_id: str, *, operator: str, now: datetime, lease_s: float
) -> Retrying:
    """Resume a failed run at the step that failed it, under that step's next round.

    One transaction under the run's row lock: the step's checkpoint starts its next
    round (new attempt numbers, so every call is a new op_key and nothing paid before
    is paid again), ``retry_count`` counts the retry, and the run moves back to the
    step's status; the step is sent after commit. A step after the approval gate
    resumes only with the run's current plan approved (the gate's trigger holds too).
    409 unless the run failed; a repeat while it runs again is a 409 saying so.
    """
    run = uow.runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    if run.status != RunStatus.FAILED.value:
        raise Conflict(
            f"run {run_id} is {run.status}: only a failed run can be retried",
            details={"rule": ["retry_failed_only"], "status": [run.status]},
        )
    step = _stopped_step(run)
    if run.worktree_removed_at is not None:
        raise Conflict(
            f"run {run_id}'s worktree was removed (KODO_WORKTREE_GRACE_S after it failed):"
            " it cannot resume; submit a new intent",
            details={"rule": ["worktree_removed"]},
        )
    try:
        move = transition(RunStatus.FAILED, Retried(step, approved=_plan_approved(uow, run)))
    except IllegalTransition as exc:
        raise Conflict(
            f"run {run_id} failed at {step.value} without an approved plan: it cannot resume",
            details={"rule": ["approval_gate"]},
        ) from exc
    started = _resume(uow, run, step, move, by=operator, kind=RETRY, now=now, lease_s=lease_s)
    uow.runs.count_retry(run_id)
    uow.runs.reload(run)
    return Retrying(run, step, started)


def dispatch_approved(
    uow: UnitOfWork, *, now: datetime, limit: int = 100, run_id: str | None = None
) -> list[str]:
    """Move approved waiting runs to ``applying`` and send their ApplyPatchST after commit.

    The approve command calls it for its own run; the approval watcher (beat, and each
    reconciler pass) calls it for all, as the safety net for an approval recorded
    without a dispatch. Rows are claimed with SKIP LOCKED and the run update is guarded,
    so the two never both move (or send) the same run. Returns the runs moved.
    """
    moved: list[str] = []
    for approval in uow.approvals.claim_undispatched(limit, run_id=run_id):
        try:
            move = transition(RunStatus.WAITING_INPUT, PlanApproved())
        except IllegalTransition:  # pragma: no cover - the machine allows it
            continue
        if uow.runs.apply(approval.run_id, move, now):
            uow.approvals.mark_dispatched(approval.id)
            if move.dispatch is not None:
                uow.send_after_commit(RunStep(move.dispatch, approval.run_id))
            moved.append(approval.run_id)
    return moved


def cancel_run(uow: UnitOfWork, run_id: str, *, now: datetime) -> tuple[Run, bool]:
    """Cancel a run in any active state and send AbortCalls after commit; (run, changed).

    Takes the run's row lock, like approve and reject, so racing calls serialise
    and leave one consistent outcome. Cancelling a cancelled run is a no-op that
    sends nothing; any other ended run is a conflict. The step in flight sees the
    cancel before its next provider call; its open call is aborted by a worker.
    """
    run = uow.runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    status = RunStatus(run.status)
    if status is RunStatus.CANCELLED:
        return run, False
    if status.is_terminal:
        raise Conflict(f"run {run.id} already ended ({run.status})")
    uow.runs.apply(run.id, transition(status, Cancel()), now)
    uow.runs.reload(run)
    uow.send_after_commit(AbortCalls(run.id))
    return run, True
