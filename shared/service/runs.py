"""Submitting intents, starting runs, deciding plans, dispatching approved runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from shared.db.models import Intent, PlanApproval, Run
from shared.db.repos.approvals import ApprovalRepo
from shared.db.repos.runs import IntentRepo, RunRepo
from shared.domain.policy import PolicyError
from shared.domain.run_machine import (
    Cancel,
    IllegalTransition,
    PlanApproved,
    PlanRejected,
    RunStatus,
    Start,
    StepId,
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
from shared.hashing import canonical_json, sha256_hex
from shared.service.repo_pin import observe_repo, resolve_commit, run_policy_at_submit


def resolve_repo(repo_path: str, roots: tuple[Path, ...]) -> Path:
    """The repository's real path, if it is a git work tree under an allowed root."""
    if not roots:
        raise RepoNotAllowed("no repository is allowed: set KODO_REPO_ROOTS")
    path = Path(repo_path)
    if not path.is_absolute():
        raise InvalidInput("repo must be an absolute path", details={"repo": ["not absolute"]})
    real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise RepoNotAllowed(f"{repo_path} is outside KODO_REPO_ROOTS")
    if not (real / ".git").exists():
        raise InvalidInput(f"{repo_path} is not a git repository", details={"repo": ["not git"]})
    return real


def submit_intent(
    s: Session,
    *,
    repo: Path,
    goal: str,
    base_ref: str,
    submitted_by: str | None,
    policy_ref: str | None = None,
) -> Intent:
    """Store an intent pinned to what it names now.

    Records the repository's real path and device/inode, the commit ``base_ref``
    resolves to, and the strictest combination of the policy at the trusted ref
    (``policy_ref``, else the repository's default branch) and at ``base_ref``.
    """
    pin = observe_repo(repo)
    if pin is None:
        raise InvalidInput(f"{repo} is gone", details={"repo": ["not found"]})
    real = Path(pin.path)
    base_commit = resolve_commit(real, base_ref)
    if base_commit is None:
        raise InvalidInput(f"unknown base_ref {base_ref!r}", details={"base_ref": ["unknown ref"]})
    try:
        policy = run_policy_at_submit(real, base_ref, base_commit, policy_ref)
    except PolicyError as exc:
        raise InvalidPolicy(str(exc), details={"policy": [str(exc)]}) from exc
    request = {"repo": pin.path, "goal": goal, "base_ref": base_ref}
    intent = Intent(
        id=str(uuid.uuid4()),
        repo_path=pin.path,
        goal=goal,
        base_ref=base_ref,
        submitted_by=submitted_by,
        request_sha256=sha256_hex(canonical_json(request)),
        base_commit=base_commit,
        repo_device=pin.device,
        repo_inode=pin.inode,
        policy=policy.to_json(),
    )
    return IntentRepo(s).add(intent)


@dataclass(frozen=True)
class Started:
    run: Run
    created: bool
    dispatch: StepId | None


def start_run(s: Session, intent_id: str, *, app_version: str, now: datetime) -> Started:
    """Create the intent's run (workflow id == intent id) once; repeats return it.

    The run records this code's step contract: every step compares its own with it
    before it enters (``shared.service.contract``).
    """
    if IntentRepo(s).get(intent_id) is None:
        raise NotFound(f"intent {intent_id} not found")
    runs = RunRepo(s)
    run, created = runs.create_queued(intent_id, app_version, step_contract_version())
    if not created:
        if RunStatus(run.status).is_terminal:
            raise Conflict(
                f"run {run.id} already ended ({run.status}); submit a new intent to run again"
            )
        return Started(run, created=False, dispatch=None)
    move = transition(RunStatus.QUEUED, Start())
    if not runs.apply(run.id, move, now):  # pragma: no cover - we just created it
        raise Conflict(f"run {run.id} moved concurrently")
    s.refresh(run)
    return Started(run, created=True, dispatch=move.dispatch)


def get_run(s: Session, run_id: str) -> Run:
    run = RunRepo(s).get(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def decide_plan(
    s: Session,
    run_id: str,
    *,
    approve: bool,
    approver: str,
    now: datetime,
    plan_sha256: str | None = None,
    comment: str | None = None,
    allow_self_approval: bool = False,
) -> PlanApproval:
    """Persist a decision on the run's current plan.

    Approval only records the row; the watcher moves the run. Rejection ends the run
    in the same transaction. A repeated identical decision is accepted again. The
    submitter may not approve their own run unless the operator allows it
    (``KODO_ALLOW_SELF_APPROVAL``): two people stand between an intent and its change.
    """
    run = RunRepo(s).get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    approvals = ApprovalRepo(s)
    decision = Decision.APPROVED if approve else Decision.REJECTED
    if run.plan_sha256 is not None:
        if plan_sha256 is not None and plan_sha256 != run.plan_sha256:
            raise Conflict(
                "the plan changed: plan_sha256 does not match the current plan",
                details={"current_plan_sha256": run.plan_sha256},
            )
        earlier = approvals.get(run.id, run.plan_sha256)
        if earlier is not None:
            if earlier.decision != decision:
                raise Conflict(f"the plan was already {earlier.decision}")
            return earlier
    if run.status != RunStatus.WAITING_INPUT.value or run.plan_sha256 is None:
        raise Conflict(f"run {run.id} is {run.status}, not waiting_input")
    if approve and not allow_self_approval:
        intent = IntentRepo(s).get(run.intent_id)
        if intent is not None and intent.submitted_by == approver:
            raise Forbidden(
                f"self-approval is refused: {approver!r} submitted this run, so another"
                " approver must approve it (the operator may allow it: KODO_ALLOW_SELF_APPROVAL=1)",
                details={"rule": ["no_self_approval"]},
            )
    row = approvals.record(
        run.id, run.plan_sha256, decision=decision, approver=approver, comment=comment
    )
    if not approve:
        move = transition(RunStatus.WAITING_INPUT, PlanRejected())
        RunRepo(s).apply(run.id, move, now)
    return row


def dispatch_approved(
    s: Session, *, now: datetime, limit: int = 100, run_id: str | None = None
) -> list[str]:
    """Move approved waiting runs to ``applying``; return the run ids to dispatch.

    Rows are claimed with SKIP LOCKED and the run update is guarded, so the approve
    endpoint and the beat watcher (its safety net) can never both dispatch the same run.
    """
    dispatched: list[str] = []
    runs = RunRepo(s)
    approvals = ApprovalRepo(s)
    for approval in approvals.claim_undispatched(limit, run_id=run_id):
        try:
            move = transition(RunStatus.WAITING_INPUT, PlanApproved())
        except IllegalTransition:  # pragma: no cover - the machine allows it
            continue
        if runs.apply(approval.run_id, move, now):
            approvals.mark_dispatched(approval.id)
            dispatched.append(approval.run_id)
    return dispatched


def cancel_run(s: Session, run_id: str, *, now: datetime) -> tuple[Run, bool]:
    """Cancel a run in any active state; return (run, changed).

    Takes the run's row lock, like approve and reject, so racing calls serialise
    and leave one consistent outcome. Cancelling a cancelled run is a no-op; any
    other ended run is a conflict. The step in flight sees the cancel before its
    next provider call, and its open call is aborted by the worker (after commit).
    """
    runs = RunRepo(s)
    run = runs.get_for_update(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    status = RunStatus(run.status)
    if status is RunStatus.CANCELLED:
        return run, False
    if status.is_terminal:
        raise Conflict(f"run {run.id} already ended ({run.status})")
    runs.apply(run.id, transition(status, Cancel()), now)
    s.refresh(run)
    return run, True
