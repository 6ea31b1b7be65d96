"""What every step shares: its context in, its outcome out, and the runner between.

The runner reloads the run, refuses stale deliveries, checkpoints the step, runs the
step's body outside any transaction, then stores the outcome and the guarded
transition in one transaction and dispatches the next step after commit.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from services.worker.runtime import Runtime
from services.worker.worktree_guard import worktree_gitdir_problem
from shared.db.engine import unit_of_work
from shared.db.repos.runs import RunRepo
from shared.db.repos.snapshots import run_snapshot
from shared.db.repos.steps import ArtifactRepo, StepRunRepo
from shared.domain.capping import cap_json
from shared.domain.pinning import RepoPin, pin_violation
from shared.domain.policy import Policy
from shared.domain.prompts import plan_block
from shared.domain.run_machine import (
    STEP_STATUS,
    RunStatus,
    StepFailed,
    StepId,
    StepSucceeded,
    Transition,
    transition,
)
from shared.domain.step_contract import step_contract_version
from shared.domain.vocab import ArtifactKind, StepRunStatus
from shared.hashing import sha256_hex
from shared.opencode.wrapper import CallSuperseded
from shared.queue import send_step
from shared.service.contract import RULE, park_on_contract_mismatch_in
from shared.service.repo_pin import observe_repo
from shared.version import app_version

log = structlog.get_logger("kodo.step")

DIAGNOSTIC_MAX_BYTES = 256 * 1024
ERROR_MAX_CHARS = 4000
MAX_CUTS_LISTED = 50


def worker_identity() -> str:
    """The lease owner's name: host and pid of this (forked) worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ArtifactOut:
    kind: ArtifactKind
    name: str
    content: bytes
    media_type: str

    @classmethod
    def json(cls, kind: ArtifactKind, name: str, value: object) -> ArtifactOut:
        body = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode()
        return cls(kind, name, body + b"\n", "application/json")

    @classmethod
    def signed_json(cls, kind: ArtifactKind, name: str, body: bytes) -> ArtifactOut:
        """A JSON artifact whose bytes are the ones a digest was taken over (from
        ``canonical_bytes``): stored verbatim, never re-serialised or pretty-printed."""
        return cls(kind, name, body, "application/json")


@dataclass(frozen=True)
class StepContext:
    """A snapshot of what a step may read, taken inside the entering transaction."""

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
    fence: int
    first_delivery: bool  # no earlier delivery of this step can have left work behind
    rt: Runtime

    def keep_lease(self) -> None:
        """Renew this delivery's lease; stop if fenced off or the run moved (cancel)."""
        with unit_of_work(self.rt.sessions) as s:
            self.hold_lease(s)

    def hold_lease(self, s: Session) -> None:
        """Inside the caller's transaction: renew the lease or raise StepAbandoned.

        Passed to the wrapper as its claim guard, so the check and the ledger claim
        commit together: a cancelled or fenced-off delivery never claims a call.
        """
        status = RunRepo(s).status_of(self.run_id)
        if status != STEP_STATUS[self.step].value:
            raise StepAbandoned(f"run is {status or 'gone'}")
        if not StepRunRepo(s).renew(
            self.run_id, self.step, self.fence, self.rt.settings.step_lease_s
        ):
            raise StepAbandoned("a newer delivery holds the step")


class Stopwatch:
    """Milliseconds a step spent in outside work (git, the verification command).

    Recorded in the step's output (``git_ms``, ``command_ms``), so SQL alone tells how
    much of a step was the repository's work and how much was kodo's.
    """

    def __init__(self, ctx: StepContext) -> None:
        self.clock = ctx.rt.clock
        self.ms = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        began = self.clock.monotonic()
        try:
            yield
        finally:
            self.ms += max(0, round((self.clock.monotonic() - began) * 1000))


class StepAbandoned(Exception):
    """This delivery must stop: the run was cancelled or another delivery took over."""


class LeaseKeeper:
    """Renew the step's lease in the background while the body runs.

    A provider call may block for up to OC_TIMEOUT_MS, and waiting out another
    worker's claim longer still; the lease must outlive both, whatever KODO_STEP_LEASE_S
    is. If a renewal finds the fence moved on, the body's next claim (its guard) stops it.
    """

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.every_s = max(0.05, ctx.rt.settings.step_lease_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="kodo-lease", daemon=True)

    def _beat(self) -> None:
        rt = self.ctx.rt
        while not self._stop.wait(self.every_s):
            try:
                with unit_of_work(rt.sessions) as s:
                    kept = StepRunRepo(s).renew(
                        self.ctx.run_id, self.ctx.step, self.ctx.fence, rt.settings.step_lease_s
                    )
            except OperationalError:
                continue  # the database is away: try again at the next beat
            if not kept:
                return

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class StepOutcome:
    ok: bool
    output: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactOut] = field(default_factory=list)
    error: str | None = None
    plan_sha256: str | None = None
    workspace: tuple[str, str] | None = None  # (branch, worktree path)

    @classmethod
    def failed(cls, error: str, diagnostic: dict[str, Any]) -> StepOutcome:
        """A terminal failure always carries a diagnostic.json artifact, capped in size.

        Its fields quote agent-written text; past DIAGNOSTIC_MAX_BYTES the largest are
        cut and ``truncated`` says which (the error itself is kept to ERROR_MAX_CHARS).
        """
        if len(error) > ERROR_MAX_CHARS:
            error = f"{error[:ERROR_MAX_CHARS]}... [cut: {len(error)} characters in all]"
        body, cuts = cap_json({"error": error, **diagnostic}, DIAGNOSTIC_MAX_BYTES)
        if cuts:
            body = {
                **body,
                "error": body.get("error", error),
                "truncated": {
                    "rule": f"diagnostic.json is capped at {DIAGNOSTIC_MAX_BYTES} bytes",
                    "cuts": [c.to_json() for c in cuts[:MAX_CUTS_LISTED]],
                    "more_cuts": max(0, len(cuts) - MAX_CUTS_LISTED),
                },
            }
        return cls(
            ok=False,
            error=error,
            artifacts=[ArtifactOut.json(ArtifactKind.DIAGNOSTIC, "diagnostic.json", body)],
        )


StepBody = Callable[[StepContext], StepOutcome]


def load_context(rt: Runtime, run_id: str, step: StepId) -> StepContext | None:
    """Snapshot the run and take the step's lease: two statements, one transaction."""
    with unit_of_work(rt.sessions) as s:
        run = run_snapshot(s, run_id)
        if run is None:
            log.warning("step.unknown_run", run_id=run_id, step_id=step.value)
            return None
        if run.status != STEP_STATUS[step].value:
            log.info("step.stale_delivery", run_id=run_id, step_id=step.value, status=run.status)
            return None
        entered = StepRunRepo(s).enter(
            run_id,
            step,
            owner=worker_identity(),
            lease_s=rt.settings.step_lease_s,
            app_version=app_version(),
        )
        if entered is None:
            log.info("step.busy", run_id=run_id, step_id=step.value)
            return None
        parked = park_on_contract_mismatch_in(
            s,
            run_id,
            step,
            run_contract=run.contract_version,
            worker_contract=step_contract_version(),
            fence=entered.fence,
            now=rt.clock.now(),
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
        return StepContext(
            run_id=run.run_id,
            step=step,
            goal=run.goal,
            repo_path=Path(run.repo_path),
            base_ref=run.base_ref,
            base_commit=run.base_commit,
            repo_pin=RepoPin(run.repo_path, run.repo_device, run.repo_inode)
            if run.repo_device is not None and run.repo_inode is not None
            else None,
            intent_policy=run.policy,
            plan_sha256=run.plan_sha256,
            approved_at=run.approved_at.isoformat() if run.approved_at else None,
            branch=run.branch,
            worktree_path=Path(run.worktree_path) if run.worktree_path else None,
            outputs=run.outputs,
            plan=run.plan,
            fence=entered.fence,
            first_delivery=entered.deliveries == 1,
            rt=rt,
        )


def run_step(rt: Runtime, step: StepId, run_id: str, body: StepBody) -> str:
    """Run ``body`` for ``run_id`` once; return what happened (for logs and tests)."""
    # Every line logged inside the step (wrapper, git, stdlib loggers) carries the ids.
    with structlog.contextvars.bound_contextvars(run_id=run_id, step_id=step.value):
        return _run_step(rt, step, run_id, body)


def _run_step(rt: Runtime, step: StepId, run_id: str, body: StepBody) -> str:
    bound = log.bind(run_id=run_id, step_id=step.value)
    ctx = load_context(rt, run_id, step)
    if ctx is None:
        return "skipped"
    bound.info("step.started")
    try:
        with LeaseKeeper(ctx):
            outcome = _guarded(ctx, body)
    except (StepAbandoned, CallSuperseded) as exc:
        bound.warning("step.abandoned", reason=str(exc))
        return "superseded"
    except OperationalError:
        # The database is down, not the step: let the task retry with backoff (the
        # lease lapses and the next delivery resumes from the ledger), never fail the run.
        bound.warning("step.database_unavailable")
        raise
    except Exception as exc:  # a bug or an unexpected environment: fail closed, keep the evidence
        bound.exception("step.crashed")
        outcome = StepOutcome.failed(
            f"{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc()}
        )
    try:
        move, outcome = _record_or_refusal(rt, step, run_id, outcome, ctx.fence)
    except _Superseded:
        bound.warning("step.superseded")
        return "superseded"
    bound.info("step.finished", ok=outcome.ok, to_status=move.to_status.value)
    if move.dispatch is not None:
        send_step(rt.celery, move.dispatch, run_id)
    return move.to_status.value


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


class _Superseded(Exception):
    """Another actor (a cancel) moved the run first: roll back this step's record."""


def _record_or_refusal(
    rt: Runtime, step: StepId, run_id: str, outcome: StepOutcome, fence: int
) -> tuple[Transition, StepOutcome]:
    """Record the outcome; if the database refuses it (a rule), record a failure instead.

    The step's work is done by now (for ApplyPatchST, a commit on the run's branch). A
    refusal simply raised would leave the step running, and every redelivery would do
    the work again and be refused the same way: a wedged run. A refusal is not an
    outage (those still raise, and the task retries), so the step fails closed with a
    diagnostic naming what the database said and what it refused.
    """
    try:
        return _record(rt, step, run_id, outcome, rt.clock.now(), fence), outcome
    except (OperationalError, InterfaceError):
        raise
    except DBAPIError as exc:
        refused = exc
    log.error("step.record_refused", error=str(refused.orig))
    failure = _refusal(outcome, refused)
    return _record(rt, step, run_id, failure, rt.clock.now(), fence), failure


def _refusal(outcome: StepOutcome, refused: DBAPIError) -> StepOutcome:
    """The failure recorded when the database refused ``outcome``; it quotes the outcome
    in diagnostic.json (bytes), never in a column that may have refused it."""
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


def _record(
    rt: Runtime, step: StepId, run_id: str, outcome: StepOutcome, now: datetime, fence: int
) -> Transition:
    with unit_of_work(rt.sessions) as s:
        for art in outcome.artifacts:
            ArtifactRepo(s).put(
                run_id,
                step,
                kind=art.kind,
                name=art.name,
                content=art.content,
                media_type=art.media_type,
            )
        recorded = StepRunRepo(s).finish(
            run_id,
            step,
            status=StepRunStatus.SUCCEEDED if outcome.ok else StepRunStatus.FAILED,
            fence=fence,
            output=outcome.output,
            error=outcome.error,
        )
        if not recorded:  # fenced off: a newer delivery owns the step now
            raise _Superseded
        event = StepSucceeded(step) if outcome.ok else StepFailed(step)
        move = transition(STEP_STATUS[step], event)
        moved = RunRepo(s).apply(
            run_id,
            move,
            now,
            step=step,
            error=outcome.error,
            plan_sha256=outcome.plan_sha256,
            workspace=outcome.workspace,
        )
        if not moved:
            raise _Superseded
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


def run_policy(ctx: StepContext) -> Policy:
    """The policy CompileST fixed for this run (the default one for older runs)."""
    stored = ctx.outputs.get(StepId.COMPILE.value, {}).get("policy")
    return Policy.from_json(stored) if isinstance(stored, dict) else Policy()


__all__ = [
    "ArtifactOut",
    "RunStatus",
    "StepContext",
    "StepOutcome",
    "Stopwatch",
    "plan_block",
    "run_step",
]
