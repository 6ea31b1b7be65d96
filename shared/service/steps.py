"""The step runner's persistence: enter a step, hold its lease, record its outcome.

Each function runs inside the caller's transaction (the runner in
services/worker/steps/base.py owns it); none commits. The runner keeps the control:
when to enter, when to run the body, when to dispatch what the machine names.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import direct
from shared.db.engine import unit_of_work
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.runs import move_values
from shared.db.repos.snapshots import entered_snapshot
from shared.db.repos.steps import NewArtifact, StepRunRepo
from shared.domain.call_record import StepLedger
from shared.domain.pinning import RepoPin
from shared.domain.rounds import RepairRequest, artifact_name, quoted_output, repairs_done
from shared.domain.run_machine import (
    STEP_STATUS,
    BudgetExhausted,
    Escalated,
    Event,
    NothingToVerify,
    Repaired,
    RunStatus,
    StepFailed,
    StepId,
    StepSucceeded,
    Transition,
    VerificationFailed,
    transition,
)
from shared.domain.step_lease import StepLease, assert_held
from shared.domain.step_outcome import StepOutcome
from shared.domain.vocab import ArtifactKind, StepRunStatus
from shared.hashing import sha256_hex
from shared.service.contract import RULE, park_on_contract_mismatch_in
from shared.service.webhooks import record_run_event

log = structlog.get_logger("kodo.step")


@dataclass(frozen=True)
class EnteredStep:
    """What a step may read, snapshotted in the transaction that took its lease."""

    run_id: str
    step: StepId
    goal: str
    repo_path: Path
    base_ref: str
    base_commit: str | None  # what base_ref named at submit: steps use this, not the ref
    repo_pin: RepoPin | None  # the repository's identity at submit
    intent_policy: dict[str, Any] | None  # the strictest policy, fixed at submit
    plan_sha256: str | None
    approved_at: str | None
    branch: str | None
    worktree_path: Path | None
    outputs: dict[str, dict[str, Any]]
    plan: dict[str, Any] | None
    lease: StepLease
    first_delivery: bool  # no earlier delivery of this step can have left work behind
    round: int  # the step's round (shared.domain.rounds): 2 and on ran it again
    attempt_base: int  # the round's attempt N is ledger attempt attempt_base + N
    round_input: dict[str, Any] | None  # what the round was asked (None: round 1)
    # What the ledger held of the step's calls, read with the lease (see StepLedger).
    ledger: StepLedger
    # Git ms this round's earlier deliveries measured before they parked on a call.
    earlier_work_ms: int


def enter_step(
    s: direct.Where,
    run_id: str,
    step: StepId,
    *,
    owner: str,
    lease_s: float,
    app_version: str,
    worker_contract: str,
    now: datetime,
    task_id: str | None = None,
    contract_unit: Callable[[], AbstractContextManager[Session]] | None = None,
) -> EnteredStep | None:
    """Snapshot the run and take the step's lease, in one statement
    (:func:`entered_snapshot`); None if this delivery has nothing to do
    (unknown run, a run that moved on, a live lease held by another delivery, or a run
    of another step contract, which is parked at waiting_upgrade here). ``task_id``:
    the delivering Celery task, recorded with the lease. ``contract_unit``: where a run
    of another contract is parked (its two writes commit together), when ``s`` runs
    each statement alone (the runner's ``load_context``, on a lone connection); None: in
    ``s``, a session."""
    found = entered_snapshot(
        s, run_id, step, owner=owner, lease_s=lease_s, app_version=app_version, task_id=task_id
    )
    if found is None:
        log.warning("step.unknown_run", run_id=run_id, step_id=step.value)
        return None
    run, entered = found
    if run.status != STEP_STATUS[step].value:  # no lease was taken
        log.info("step.stale_delivery", run_id=run_id, step_id=step.value, status=run.status)
        return None
    if entered is None:
        log.info("step.busy", run_id=run_id, step_id=step.value)
        return None
    parked = None
    # The run's contract is the worker's (every delivery but the first after an
    # upgrade): nothing to adopt or park, so no unit is opened for it (a Session begun
    # and committed empty on every delivery, a tenth of the entry's CPU).
    if run.contract_version != worker_contract:
        unit_of = contract_unit or (lambda: nullcontext(direct.session_of(s)))
        with unit_of() as unit:
            parked = park_on_contract_mismatch_in(
                unit,
                run_id,
                step,
                run_contract=run.contract_version,
                worker_contract=worker_contract,
                fence=entered.fence,
                now=now,
            )
    if parked is not None:
        log.warning(
            "step.parked",
            rule=RULE,
            run_contract=parked.run_contract,
            worker_contract=parked.worker_contract,
            run_id=run_id,
            step_id=step.value,
        )
        return None
    if entered.app_version and run.app_version != entered.app_version:
        log.warning(
            "step.version_mismatch",
            run_id=run_id,
            step_id=step.value,
            run_version=run.app_version,
            worker_version=entered.app_version,
        )
    pin = (
        RepoPin(run.repo_path, run.repo_device, run.repo_inode)
        if run.repo_device is not None and run.repo_inode is not None
        else None
    )
    return EnteredStep(
        run_id=run.run_id,
        step=step,
        goal=run.goal,
        repo_path=Path(run.repo_path),
        base_ref=run.base_ref,
        base_commit=run.base_commit,
        repo_pin=pin,
        intent_policy=run.policy,
        plan_sha256=run.plan_sha256,
        approved_at=run.approved_at.isoformat() if run.approved_at else None,
        branch=run.branch,
        worktree_path=Path(run.worktree_path) if run.worktree_path else None,
        outputs=run.outputs,
        plan=run.plan,
        lease=StepLease(run.run_id, step, entered.fence, lease_s),
        # A later round may find an earlier round's work (a commit, a dirty worktree).
        first_delivery=entered.deliveries == 1 and run.round == 1,
        round=run.round,
        attempt_base=run.attempt_base,
        round_input=run.round_input,
        ledger=run.ledger,
        earlier_work_ms=entered.parked_work_ms,
    )


def hold_lease(s: Session, lease: StepLease) -> None:
    """Renew ``lease`` or raise StepAbandoned (the run moved, or a newer delivery holds it).

    A provider call's claim holds the lease the same way in its own statement
    (:meth:`shared.db.repos.ledger.LedgerRepo.claim`), so the check and the claim
    commit together: a cancelled or fenced-off delivery never claims a provider call.
    """
    status, renewed = StepRunRepo(s).hold(lease.run_id, lease.step, lease.fence, lease.lease_s)
    assert_held(lease, status, renewed)  # the renewal rolls back with the raise


def renew_lease(s: Session, lease: StepLease) -> bool:
    """Push the lease's expiry forward; False if another delivery's fence replaced ours."""
    return StepRunRepo(s).renew(lease.run_id, lease.step, lease.fence, lease.lease_s)


def park_on_call(
    s: direct.Where,
    lease: StepLease,
    *,
    op_key: str,
    hold_s: float,
    check_woken: bool,
    mark_sent: bool = False,
    work_ms: int = 0,
) -> Literal["superseded", "parked", "wake", "cancelled"]:
    """Hand the step's lease to the sent call ``op_key`` for ``hold_s``; with
    ``mark_sent``, record the call ``sent`` first, in the same transaction (even when
    the step was superseded meanwhile: the daemon has the prompt either way).

    ``wake``: parked, but the collector already saw the call's session end (its
    wake-up may have been turned away while the lease was still ours), so the caller
    sends the step again after commit. Each side marks the call's row and reads the
    other's mark with its own (``mark_sent``) or after it: the two serialise on the
    row's lock, so the later one sees the earlier and no wake-up is lost.

    ``work_ms``: the git time this delivery measured, added to the step's row for the
    delivery that records the outcome (its ``git_ms`` is the step's whole git time).

    ``cancelled``: parked, but the run was cancelled while its prompt was being sent;
    the cancel's abort may have run before the prompt reached the daemon, so the caller
    sends the run's abort again after commit (the reconciler's sweep is the net).

    Committed lazily (:func:`shared.db.engine.lazy_commit`, a column of the park's
    statement): the prompt's session is recorded already (``mark_started``, durably,
    before it was sent), so a park lost with Postgres leaves a claimed call with its
    session: once the step's lease lapses the reconciler sends the step again, which
    collects the session's answer at the call's deadline at the latest. Nothing outside
    Postgres acts on the park alone. Run alone (``UnitOfWork(alone=True)``), the park is
    one round trip, committed before the collector's mark is read after it (without
    ``mark_sent``).
    """
    # Whether the collector saw the session end, read with the mark (None: not marked,
    # the call was sent before; read after the park then).
    ended: bool | None = None
    if mark_sent:
        ended, status = LedgerRepo(s).mark_sent_and_park(
            lease, op_key=op_key, hold_s=hold_s, work_ms=work_ms
        )
    else:
        status = StepRunRepo(s).park(
            lease.run_id, lease.step, lease.fence, op_key=op_key, hold_s=hold_s, work_ms=work_ms
        )
    if status is None:
        return "superseded"
    if status == RunStatus.CANCELLED.value:
        return "cancelled"
    if not check_woken:
        return "parked"
    if ended is None:  # marked sent before: read the collector's mark now
        ended = not LedgerRepo(s).awaits_collection(op_key)
    return "wake" if ended else "parked"


class StepSuperseded(Exception):
    """Another actor (a cancel, a newer delivery) moved first: roll back this record."""


@dataclass(frozen=True)
class Routing:
    """What the router needs besides the outcome: the round the step ran and the
    operator's repair limit (and how long a re-sent step's lease is held for)."""

    round: int = 1
    round_input: dict[str, Any] | None = None
    max_repairs: int = 0
    redispatch_s: float = 30.0
    # Whether a run event leaves a webhook outbox row. False when no webhook is
    # configured: nobody would be sent it, and each row cost a read and an insert in the
    # step's transaction (the sweep would only have recorded it skipped).
    announce: bool = True


def _repairs_made(s: Session, run_id: str) -> int:
    """How many repairs the run's ApplyPatchST has made (its current round says)."""
    apply = StepRunRepo(s).get(run_id, StepId.APPLY_PATCH)
    return repairs_done(apply.round_input if apply is not None else None)


def _event(lease: StepLease, outcome: StepOutcome, routing: Routing, repairs: int) -> Event:
    """The machine's event for this outcome (the router's part of DecideST, kept pure in
    the machine: a failed verification goes back for a repair while repairs are left;
    ``repairs``: how many the run has made)."""
    if outcome.ok:
        if lease.step is StepId.APPLY_PATCH and repairs_done(routing.round_input) > 0:
            return Repaired()
        if lease.step is StepId.DECIDE:
            route = outcome.output.get("next_action")
            if route == "done":
                return NothingToVerify()
            if route == "escalate":
                return Escalated()
        return StepSucceeded(lease.step)
    if outcome.budget_stop:
        return BudgetExhausted(lease.step)
    if lease.step is StepId.EXECUTE and outcome.verification_failed:
        return VerificationFailed(repairs_left=repairs < routing.max_repairs)
    return StepFailed(lease.step)


def _next_round_input(
    lease: StepLease, outcome: StepOutcome, dispatch: StepId, repairs: int
) -> dict[str, Any]:
    """What the step the run goes back to is asked in its next round."""
    if dispatch is StepId.APPLY_PATCH:  # a repair: the failed command and its output
        shown = next(
            (a.content for a in outcome.artifacts if a.kind is ArtifactKind.COMMAND_OUTPUT), b""
        )
        exit_code = outcome.output.get("exit_code")
        return RepairRequest(
            repair=repairs + 1,
            argv=tuple(str(a) for a in outcome.output.get("argv", [])),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            timed_out=outcome.output.get("timed_out") is True,
            output=quoted_output(shown),
            rule=rule if isinstance(rule := outcome.output.get("rule"), str) else None,
        ).to_json()
    return {"kind": "after", "step": lease.step.value}


def record_outcome(
    s: Session,
    lease: StepLease,
    outcome: StepOutcome,
    now: datetime,
    routing: Routing = Routing(),
) -> Transition:
    """Store the outcome and its artifacts and move the run as the machine says.

    The artifacts of round N > 1 carry the round in their name (``plan.r2.json``): no
    round's evidence is dropped as a repeat of an earlier round's. A step the run goes
    back to (a repair) or on to again (verifying a repair) starts its next round here,
    in the same transaction. Raises StepSuperseded if the fence or the run moved on
    (the caller rolls back).
    """
    artifacts = [
        NewArtifact(art.kind, artifact_name(art.name, routing.round), art.content, art.media_type)
        for art in outcome.artifacts
    ]
    verifying = lease.step is StepId.EXECUTE and outcome.verification_failed
    repairs = _repairs_made(s, lease.run_id) if verifying else 0  # ApplyPatchST's row
    event = _event(lease, outcome, routing, repairs)
    move = transition(STEP_STATUS[lease.step], event)
    recorded = StepRunRepo(s).finish_moving_run(
        lease.run_id,
        lease.step,
        status=StepRunStatus.SUCCEEDED if outcome.ok else StepRunStatus.FAILED,
        fence=lease.fence,
        output=outcome.output,
        error=outcome.error,
        run_move=move_values(
            move,
            now,
            step=lease.step,
            error=outcome.error,
            clear_error=outcome.ok,  # a repaired run that succeeds carries no stale error
            plan_sha256=outcome.plan_sha256,
            workspace=outcome.workspace,
        ),
        artifacts=artifacts,  # stored by the same statement
    )
    if not recorded:  # fenced off (a newer delivery owns the step), or the run moved
        raise StepSuperseded
    if routing.announce:
        record_run_event(s, lease.run_id, move, now)  # the webhook outbox, in this transaction
    if move.dispatch is not None and isinstance(event, VerificationFailed | Repaired):
        # The run goes back (or on again) to a step that already ran: its next round.
        StepRunRepo(s).new_round(
            lease.run_id,
            move.dispatch,
            round_input=_next_round_input(lease, outcome, move.dispatch, repairs),
            lease_s=routing.redispatch_s,
        )
    return move


def refused_outcome(outcome: StepOutcome, refused: DBAPIError) -> StepOutcome:
    """The failure recorded when the database refused ``outcome`` (a rule, not an outage).

    It quotes the outcome in diagnostic.json (bytes), never in a column that may have
    refused it.
    """
    cause = refused.orig
    sqlstate = cause.sqlstate if isinstance(cause, psycopg.Error) else None
    message = str(cause if cause is not None else refused).replace("\x00", "")
    return StepOutcome.failed(
        f"record_refused: the database refused to record this step's outcome: {message}",
        {
            "rule": "record_refused",
            "sqlstate": sqlstate,
            "refused_outcome": {
                "ok": outcome.ok,
                "error": outcome.error,
                "output": outcome.output,
                "artifacts": [
                    {"name": a.name, "kind": a.kind, "sha256": sha256_hex(a.content)}
                    for a in outcome.artifacts
                ],
            },
        },
    )


class StepLeases:
    """The lease heartbeat on Postgres: each call is its own short transaction (a renewal
    must commit while the step's body runs, outside any transaction of its own)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def hold(self, lease: StepLease) -> None:
        """Renew ``lease`` or raise StepAbandoned (see :func:`hold_lease`)."""
        with unit_of_work(self.sessions) as s:
            hold_lease(s, lease)

    def renew(self, lease: StepLease) -> bool:
        with unit_of_work(self.sessions) as s:
            return renew_lease(s, lease)
