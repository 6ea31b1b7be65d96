"""What every step shares: its context in, its outcome out, and the runner between.

The runner reloads the run, refuses stale deliveries, checkpoints the step, runs the
step's body outside any transaction, then stores the outcome and the guarded
transition in one unit of work whose outbox sends the next step after commit.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from services.worker.cancel import abort_late_prompt
from services.worker.git_ops import Worktree, open_worktree
from services.worker.runtime import Runtime
from services.worker.worktree_guard import worktree_gitdir_problem
from shared.clock import Clock
from shared.config import Settings
from shared.db import direct
from shared.db.engine import unit_of_work
from shared.domain.budget import BudgetExceeded
from shared.domain.pinning import pin_violation
from shared.domain.policy import Policy
from shared.domain.prompts import plan_block
from shared.domain.run_machine import RunStatus, StepId, Transition
from shared.domain.step_contract import step_contract_version
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.domain.step_outcome import ArtifactOut, RuleRefusal, StepOutcome
from shared.opencode.calls import CallPending, CallSuperseded, UnrecordedAnswers
from shared.opencode.ports import StructuredCalls
from shared.service.messages import AbortCalls, Deliver, RunStep
from shared.service.repo_pin import observe_repo
from shared.service.steps import (
    EnteredStep,
    Routing,
    StepLeases,
    StepSuperseded,
    enter_step,
    park_on_call,
    record_outcome,
    refused_outcome,
)
from shared.version import app_version

log = structlog.get_logger("kodo.step")


def worker_identity() -> str:
    """The lease owner's name: host and pid of this (forked) worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StepPorts(Protocol):
    """What a step's body may use besides its snapshot; the worker's Runtime is one."""

    settings: Settings
    clock: Clock
    oc: StructuredCalls


class LeaseHolder(Protocol):
    """Renews a step's lease (see :class:`shared.service.steps.StepLeases`)."""

    def hold(self, lease: StepLease) -> None:
        """Renew ``lease`` or raise StepAbandoned."""
        ...

    def renew(self, lease: StepLease) -> bool: ...


@dataclass
class WorkTime:
    """Milliseconds one delivery spent in outside work, as its Stopwatch measured them."""

    ms: int = 0


@dataclass(frozen=True)
class StepContext(EnteredStep):
    """What a step may read (its snapshot, taken when it entered) and use (its ports)."""

    rt: StepPorts
    leases: LeaseHolder
    # Answers collected by this delivery, recorded with its outcome (UnrecordedAnswers).
    unrecorded: UnrecordedAnswers = field(default_factory=UnrecordedAnswers)
    # The git time this delivery measured (kept on the step's row if it parks).
    work: WorkTime = field(default_factory=WorkTime)

    @classmethod
    def entered(cls, step: EnteredStep, rt: StepPorts, leases: LeaseHolder) -> StepContext:
        snapshot = {f.name: getattr(step, f.name) for f in fields(EnteredStep)}
        return cls(**snapshot, rt=rt, leases=leases)

    @property
    def fence(self) -> int:
        return self.lease.fence

    def keep_lease(self) -> None:
        """Renew this delivery's lease; raise StepAbandoned if fenced off or the run
        moved (a cancel)."""
        self.leases.hold(self.lease)


class Stopwatch:
    """Milliseconds a step spent in outside work (git, the verification command).

    Recorded in the step's output (``git_ms``, ``command_ms``), so SQL alone tells how
    much of a step was the repository's work and how much was kodo's. A step body's
    git watch starts from what the round's earlier deliveries measured before they
    parked on a call (a provider step makes or resets its worktree, then sends and
    parks; the delivery the answer wakes records the outcome), and what it measures is
    also this delivery's, kept on the step's row if it parks in turn.
    """

    def __init__(self, ctx: StepContext, *, carried: bool = True) -> None:
        """``carried=False``: a second watch of the same body (ExecuteST's command),
        which neither starts from the parked deliveries' time nor adds to it."""
        self.clock = ctx.rt.clock
        self.ms = ctx.earlier_work_ms if carried else 0
        self._delivery = ctx.work if carried else WorkTime()

    @contextmanager
    def measure(self) -> Iterator[None]:
        began = self.clock.monotonic()
        try:
            yield
        finally:
            spent = max(0, round((self.clock.monotonic() - began) * 1000))
            self.ms += spent
            self._delivery.ms += spent


class LeaseKeeper:
    """Renew the step's lease in the background while the body runs.

    A provider call may block for up to OC_TIMEOUT_MS, and waiting out another
    worker's claim longer still; the lease must outlive both, whatever KODO_STEP_LEASE_S
    is. If a renewal finds the fence moved on, the body's next claim (its guard) stops it.
    One renewer thread per process serves every delivery in it (a thread started and
    joined per delivery cost more than the step's own bookkeeping).
    """

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.every_s = max(0.05, ctx.lease.lease_s / 3)

    def __enter__(self) -> LeaseKeeper:
        _renewer().add(self)
        return self

    def __exit__(self, *_: object) -> None:
        _renewer().remove(self)

    def beat(self) -> bool:
        """Renew once; False once the lease is lost (the keeper is then dropped). Any
        other failure (the database away, the pool exhausted, a broken connection) is
        tried again at the next beat: the process's one renewer must not die of it, or
        every lease in the process would lapse."""
        try:
            return self.ctx.leases.renew(self.ctx.lease)
        except Exception as exc:  # logged; the next beat tries again
            log.warning("step.lease_renewal_failed", run_id=self.ctx.lease.run_id, error=str(exc))
            return True


class _Renewer:
    """The process's lease renewer: each keeper beats every ``every_s`` until removed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[LeaseKeeper, float] = {}
        self._beating: set[LeaseKeeper] = set()
        self._wakes_at = 0.0  # when the renewer looks again (it is awake: now)
        self._thread = threading.Thread(target=self._run, name="kodo-lease", daemon=True)
        self._thread.start()

    def add(self, keeper: LeaseKeeper) -> None:
        with self._cond:
            due = time.monotonic() + keeper.every_s
            self._due[keeper] = due
            # Most deliveries end before their first beat: wake the renewer only when
            # this keeper is due before it would look anyway (waking it per delivery
            # cost a thread switch each).
            if due < self._wakes_at:
                self._cond.notify_all()

    def remove(self, keeper: LeaseKeeper) -> None:
        """Stop beating ``keeper``; returns once no beat of it is under way (the step
        may park next, and a late renewal would stretch the parked lease)."""
        with self._cond:
            self._due.pop(keeper, None)
            while keeper in self._beating:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [k for k, at in self._due.items() if at <= now]
                if not due:
                    soonest = min(self._due.values(), default=now + 3600)
                    self._wakes_at = soonest
                    self._cond.wait(timeout=soonest - now)
                    self._wakes_at = 0.0
                    continue
                for keeper in due:
                    self._due[keeper] = now + keeper.every_s
                self._beating.update(due)
            for keeper in due:  # outside the lock: a renewal is a transaction
                kept = keeper.beat()  # never raises: a dead renewer would wedge remove()
                with self._cond:
                    self._beating.discard(keeper)
                    if not kept:
                        self._due.pop(keeper, None)
                    self._cond.notify_all()


_RENEWERS: dict[int, _Renewer] = {}
_RENEWERS_LOCK = threading.Lock()


def _renewer() -> _Renewer:
    """This process's renewer (a forked child starts its own: threads do not survive fork)."""
    pid = os.getpid()
    with _RENEWERS_LOCK:
        if pid not in _RENEWERS:
            _RENEWERS.clear()
            _RENEWERS[pid] = _Renewer()
        return _RENEWERS[pid]


StepBody = Callable[[StepContext], StepOutcome]


def load_context(
    rt: Runtime, run_id: str, step: StepId, task_id: str | None = None
) -> StepContext | None:
    """Snapshot the run and take the step's lease; None: nothing to do. ``task_id``: the
    Celery task delivering the step.

    The snapshot and the lease are one statement, run alone on a pooled connection
    (no BEGIN, COMMIT or Session around it: :func:`shared.db.direct.alone`). Nothing is
    lost by it: the lease is taken (or not) by that statement against the run's status
    as it reads it, and a provider step reads the run's status again with its lease at its first
    claim (a cancel after the lease stops it there, as it did).
    Only the rare writes that must commit together, parking a run of another step
    contract, take a transaction of their own, after the lease is committed: should
    the database drop that transaction, the lease stays taken and the step waits for it
    to lapse (the reconciler's pass), where a rollback used to free it for the retry.
    """
    with direct.alone(rt.engine) as s:
        entered = enter_step(
            s,
            run_id,
            step,
            owner=worker_identity(),
            lease_s=rt.settings.step_lease_s,
            app_version=app_version(),
            worker_contract=step_contract_version(),
            now=rt.clock.now(),
            task_id=task_id,
            contract_unit=lambda: unit_of_work(rt.sessions),
        )
    return None if entered is None else StepContext.entered(entered, rt, StepLeases(rt.sessions))


@dataclass(frozen=True)
class Delivered:
    """What one delivery did: the last step it ran, and what happened to that step."""

    step: StepId
    status: str
    # The step the outcome moved the run on to, its message not sent: this delivery
    # runs it next (run_steps).
    then: StepId | None = None


MAX_HOPS = 4
"""Steps one delivery goes on to, at most, before it sends the next one as a message.
A chain parks on its provider call well before this: the bound only keeps a machine
change from turning a delivery into a loop."""

SENDS_AND_PARKS = frozenset({StepId.COMPILE, StepId.APPLY_PATCH, StepId.DECIDE})
"""Steps whose delivery, with OC_ASYNC, sends the step's provider call and parks: a
moment's work, after which the delivery its answer wakes is the step's own task."""


def run_step(
    rt: Runtime, step: StepId, run_id: str, body: StepBody, *, task_id: str | None = None
) -> str:
    """Run ``body`` for ``run_id`` once; return what happened (for logs and tests). The
    step the outcome names next is sent as a message after the commit.
    ``task_id``: the Celery task delivering it (the collector's wake-ups name it)."""
    # Every line logged inside the step (call protocol, git, stdlib loggers) carries the ids.
    with structlog.contextvars.bound_contextvars(run_id=run_id, step_id=step.value):
        return _run_step(rt, step, run_id, body, task_id, go_on=_never).status


def _never(_: StepId) -> bool:
    return False


def goes_on_to(settings: Settings, step: StepId) -> bool:
    """Whether a delivery that moved a run on to ``step`` runs it itself, instead of
    sending it as a message: only a step whose delivery sends its provider call and
    parks (OC_ASYNC). The delivery then saves a Celery hop, and the delivery the answer
    wakes is still the step's own task (Flower, the celery CLI). A step that does its
    work in its delivery (ExecuteST's command) or blocks on its call goes as its task."""
    return settings.oc_async and step in SENDS_AND_PARKS


def run_steps(
    rt: Runtime,
    step: StepId,
    run_id: str,
    bodies: Mapping[StepId, StepBody],
    *,
    task_id: str | None = None,
) -> Delivered:
    """Run ``step`` for ``run_id``, then, in this same delivery, the step its outcome
    moves the run on to if that step only sends its provider call (:func:`goes_on_to`).

    The next step's message would only have brought the run to a worker thread again
    (a Celery delivery, a lease taken from the rows either way); going on here is the
    same protocol without the hop. Nothing is lost if the worker dies between the two:
    the run sits at the next step's status with no checkpoint, which the reconciler
    re-sends from the rows, as it does a lost message. A step gone on to that finds the
    database away is sent as a message instead: its delivery takes the step at once if
    the failed one had not yet taken the lease, else once that lease lapses (by the
    reconciler's pass), as for any delivery the database dropped mid-step.
    """

    def go_on(then: StepId) -> bool:
        return hop < MAX_HOPS and goes_on_to(rt.settings, then)

    for hop in range(MAX_HOPS + 1):
        with structlog.contextvars.bound_contextvars(run_id=run_id, step_id=step.value):
            try:
                done = _run_step(rt, step, run_id, bodies[step], task_id, go_on=go_on)
            except OperationalError:
                if hop == 0:
                    raise  # this task's own step: Celery retries it with backoff
                log.warning("step.database_unavailable", run_id=run_id, step_id=step.value)
                _send_now(rt, RunStep(step, run_id, parent=task_id))
                return Delivered(step, "sent")
        if done.then is None:
            return done
        step = done.then
    raise AssertionError("unreachable: the last hop may not go on")


def _send_now(rt: Runtime, message: RunStep) -> None:
    """Send ``message`` outside any unit of work (nothing is left to commit)."""
    with rt.uow() as uow:
        uow.send_after_commit(message)


def _run_step(
    rt: Runtime,
    step: StepId,
    run_id: str,
    body: StepBody,
    task_id: str | None,
    *,
    go_on: Callable[[StepId], bool],
) -> Delivered:
    bound = log.bind(run_id=run_id, step_id=step.value)
    ctx = load_context(rt, run_id, step, task_id)
    if ctx is None:
        return Delivered(step, "skipped")
    bound.info("step.started")
    try:
        with LeaseKeeper(ctx):
            outcome = _guarded(ctx, body)
    except CallPending as pending:  # (a call's claim records any answer still waiting)
        return Delivered(step, _park(rt, ctx.lease, pending, work_ms=ctx.work.ms))
    except (StepAbandoned, CallSuperseded) as exc:
        bound.warning("step.abandoned", reason=str(exc))
        _keep_answers(rt, ctx.unrecorded)
        return Delivered(step, "superseded")
    except OperationalError:
        # The database is down, not the step: let the task retry with backoff (the
        # lease lapses and the next delivery resumes from the ledger), never fail the run.
        bound.warning("step.database_unavailable")
        raise
    except BudgetExceeded as exc:  # the next call was not sent: the run waits for budget
        bound.warning("step.budget_stop", detail=exc.detail)
        outcome = StepOutcome.failed(exc.detail, {"rule": exc.rule})
        outcome.budget_stop = True
    except RuleRefusal as exc:  # a rule below the step (the ledger's, say) refused it
        bound.warning("step.refused", rule=exc.rule)
        outcome = StepOutcome.failed(str(exc), {"rule": exc.rule})
    except Exception as exc:  # a bug or an unexpected environment: fail closed, keep the evidence
        bound.exception("step.crashed")
        outcome = StepOutcome.failed(
            f"{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc()}
        )
    try:
        move, outcome = _record_or_refusal(
            rt, ctx.lease, outcome, _routing(ctx), ctx.unrecorded, go_on=go_on
        )
    except (StepSuperseded, CallSuperseded):
        bound.warning("step.superseded")
        _keep_answers(rt, ctx.unrecorded)
        return Delivered(step, "superseded")
    then = move.dispatch if move.dispatch is not None and go_on(move.dispatch) else None
    if then is None:
        bound.info("step.finished", ok=outcome.ok, to_status=move.to_status.value)
    else:
        bound.info("step.finished", ok=outcome.ok, to_status=move.to_status.value, then=then.value)
    return Delivered(step, move.to_status.value, then)


def _keep_answers(rt: Runtime, unrecorded: UnrecordedAnswers) -> None:
    """The outcome was refused (a cancel moved the run, another delivery took the step,
    the database refused the record): the answers this delivery collected were paid for
    all the same, so they are recorded now, on their own, with their usage, and their
    sessions deleted; an answer whose call ended otherwise meanwhile (a cancel's abort
    recorded first), or that the database refuses too, is left as the row says."""
    if not unrecorded.pending:
        return
    try:
        rt.oc.flush(unrecorded)
    except CallSuperseded as exc:
        log.warning("step.answer_not_kept", reason=str(exc))
    except DBAPIError as exc:  # the database is away: the row stays sent, its session kept
        log.warning("step.answer_not_kept", error=str(exc.orig))


PARK_GRACE_S = 5.0
"""A parked step's lease outlives its call's deadline by this much, so the sweep that
resumes it after the deadline finds the call overdue (and aborts it)."""


def _park(rt: Runtime, lease: StepLease, pending: CallPending, *, work_ms: int = 0) -> str:
    """Free this worker's thread while the model thinks: hand the step's lease to the
    sent call until its deadline. If the collector saw the session end before the
    park committed (its wake-up found the lease still ours and was turned away), the
    step is woken here: each side commits its mark, then reads the other's. If the run
    was cancelled while the prompt was being sent, the run's abort is sent again: the
    cancel's own may have run before the daemon had the prompt; and if this worker
    stalled past its lease meanwhile (the run cancelled or the step taken over), the
    prompt is aborted here when nobody else will (``abort_late_prompt``). Run alone:
    the park is one statement that commits itself (lazily), and nothing after it is
    rolled back."""
    with rt.uow(alone=True) as uow:
        parked = park_on_call(
            uow.where,
            lease,
            op_key=pending.op_key,
            hold_s=pending.hold_s + PARK_GRACE_S,
            check_woken=not pending.woken,
            mark_sent=pending.unrecorded,
            work_ms=work_ms,
        )
        if parked == "wake":
            uow.send_after_commit(RunStep(lease.step, lease.run_id))
        if parked == "cancelled":  # the cancel's abort may have come before the prompt
            uow.send_after_commit(AbortCalls(lease.run_id))
    if parked in ("superseded", "cancelled") and pending.unrecorded:
        # stalled past our lease while sending, our call may be taken for an orphan's
        abort_late_prompt(rt, pending.op_key, run_cancelled=parked == "cancelled")
    if parked == "superseded":
        log.warning("step.superseded_while_sending", run_id=lease.run_id, op_key=pending.op_key)
        return "superseded"
    if parked == "cancelled":
        log.warning("step.cancelled_while_sending", run_id=lease.run_id, op_key=pending.op_key)
        return "cancelled"
    log.info(
        "step.parked_on_call",
        run_id=lease.run_id,
        step_id=lease.step.value,
        op_key=pending.op_key,
        session_id=pending.session_id,
        hold_s=round(pending.hold_s, 1),
    )
    return "parked"


def pinning(ctx: StepContext) -> str | None:
    """The bubblewrap that pins kodo's git to a worktree's verified folder (git_ops), or
    None when the operator turned the sandbox off (KODO_SANDBOX=off)."""
    settings = ctx.rt.settings
    return settings.sandbox_bwrap if settings.sandbox else None


def opened_worktree(ctx: StepContext, path: Path) -> Worktree:
    """The run's worktree at ``path``, verified (WorktreeTampered, a RuleRefusal, if its
    ``.git`` or its folder was tampered with)."""
    return open_worktree(path, ctx.repo_path, bwrap=pinning(ctx))


def _guarded(ctx: StepContext, body: StepBody) -> StepOutcome:
    """Run ``body`` unless the repository was swapped since submit (pinning) or the run's
    worktree pointer was tampered with (see worktree_guard)."""
    refused = _pin_refusal(ctx)
    if refused is not None:
        return refused
    if ctx.worktree_path is not None and ctx.step is not StepId.COMPILE:
        problem = worktree_gitdir_problem(ctx.worktree_path, ctx.repo_path)
        if problem is not None:
            return StepOutcome.failed(problem, {"rule": "worktree_gitdir"})
    return body(ctx)


def _routing(ctx: StepContext) -> Routing:
    settings = ctx.rt.settings
    return Routing(
        round=ctx.round,
        round_input=ctx.round_input,
        max_repairs=settings.max_repairs,
        redispatch_s=settings.redispatch_after_s,
        announce=settings.webhooks_configured,
    )


def _record_or_refusal(
    rt: Runtime,
    lease: StepLease,
    outcome: StepOutcome,
    routing: Routing,
    unrecorded: UnrecordedAnswers,
    *,
    go_on: Callable[[StepId], bool] = _never,
) -> tuple[Transition, StepOutcome]:
    """Record the outcome; if the database refuses it (a rule), record a failure instead.

    The step's work is done by now (for ApplyPatchST, a commit on the run's branch). A
    refusal simply raised would leave the step running, and every redelivery would do
    the work again and be refused the same way: a wedged run. A refusal is not an
    outage (those still raise, and the task retries), so the step fails closed with a
    diagnostic naming what the database said and what it refused. The answers waiting
    to be recorded with the outcome are recorded on their own first: if the database
    refuses those too, they stay ``sent`` with their sessions kept, as a worker that died
    there would leave them.
    """
    try:
        return _record(rt, lease, outcome, routing, unrecorded, go_on=go_on), outcome
    except (OperationalError, InterfaceError):
        raise
    except DBAPIError as exc:
        refused = exc
    log.error("step.record_refused", error=str(refused.orig))
    _keep_answers(rt, unrecorded)
    unrecorded.take()  # any the database refused too stay sent: the failure goes without
    failure = refused_outcome(outcome, refused)
    return _record(rt, lease, failure, routing, unrecorded, go_on=go_on), failure


def _record(
    rt: Runtime,
    lease: StepLease,
    outcome: StepOutcome,
    routing: Routing,
    unrecorded: UnrecordedAnswers,
    *,
    go_on: Callable[[StepId], bool] = _never,
) -> Transition:
    """Record ``outcome``, and the answers it was judged from, in one unit of work; the
    step the machine names next is sent only after it commits (a lost send is re-sent
    by the reconciler, from the rows), unless this delivery goes on to it itself
    (``go_on``), and the answers' sessions are deleted then."""
    with rt.uow() as uow:
        rt.record_answers_in(uow.session, unrecorded)
        move = record_outcome(uow.session, lease, outcome, rt.clock.now(), routing)
        if move.dispatch is not None and not go_on(move.dispatch):
            uow.send_after_commit(RunStep(move.dispatch, lease.run_id))
        if move.to_status is RunStatus.SUCCEEDED and rt.settings.deliver_remote:
            uow.send_after_commit(Deliver(lease.run_id))
    unrecorded.settle()
    return move


def _pin_refusal(ctx: StepContext) -> StepOutcome | None:
    """Every step opens the repository (or a worktree whose git dir lives in it): first
    check it is still the directory the intent was submitted against."""
    violation = pin_violation(ctx.repo_pin, observe_repo(ctx.repo_path))
    if violation is None:
        return None
    return StepOutcome.failed(
        f"{violation.rule}: {violation.detail}",
        {"violations": [violation.to_json()]},
    )


def judged_commit(ctx: StepContext) -> str | None:
    """The commit ApplyPatchST judged and recorded (None before it has)."""
    commit = ctx.outputs.get(StepId.APPLY_PATCH.value, {}).get("commit")
    return commit if isinstance(commit, str) else None


def run_policy(ctx: StepContext) -> Policy:
    """The policy CompileST fixed for this run (the default one for older runs)."""
    stored = ctx.outputs.get(StepId.COMPILE.value, {}).get("policy")
    return Policy.from_json(stored) if isinstance(stored, dict) else Policy()


__all__ = [
    "ArtifactOut",
    "RunStatus",
    "StepAbandoned",
    "StepContext",
    "StepOutcome",
    "Stopwatch",
    "plan_block",
    "run_step",
]
