"""Step checkpoints (``step_runs``) and artifacts.

Every time on a step row (its start, its end, its lease's expiry) is Postgres'
``statement_timestamp()``, never a worker host's clock: the approval gate and the lease
rules compare these times with others the database assigned, so a worker whose clock
runs behind or ahead decides nothing differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    CTE,
    BindParameter,
    ColumnElement,
    DateTime,
    Integer,
    Interval,
    LargeBinary,
    Select,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased, defer
from sqlalchemy.sql.dml import ReturningUpdate

from shared.db import direct
from shared.db.engine import lazy_commit
from shared.db.models import (
    Artifact,
    OpenCodeCall,
    PlanApproval,
    Run,
    StepRound,
    StepRun,
    bound,
    table_of,
)
from shared.db.repos.base import PrebuiltRepo
from shared.db.repos.runs import guarded_move
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind, StepRunStatus
from shared.hashing import sha256_hex

RECONCILER = "reconciler"
"""Lease owner written when the reconciler re-dispatches: the next delivery may take it."""
PARKED = "parked"
"""Lease owner of a step parked on a sent provider call until the call's deadline."""


_STEPS = table_of(StepRun)
_RUNS = table_of(Run)
_ARTIFACTS = table_of(Artifact)
_APPROVALS = table_of(PlanApproval)


def db_now() -> ColumnElement[Any]:
    """The database's time when this statement began: one clock for every host."""
    return func.statement_timestamp(type_=DateTime(timezone=True))


def _lease_expiry() -> ColumnElement[Any]:
    return db_now() + bindparam("lease", type_=Interval)


_ENTERED_COLUMNS = (
    "run_id",
    "step_id",
    "status",
    "started_at",
    "fence",
    "deliveries",
    "lease_owner",
    "lease_expires_at",
    "app_version",
    "task_id",
)


def _run_at_expected_status() -> ColumnElement[bool]:
    """The run ``w_run_id`` exists and is at ``w_expected`` (the step's status), as the
    statement's snapshot shows it."""
    return exists().where(
        _RUNS.c.id == bindparam("w_run_id", type_=String),
        _RUNS.c.status == bindparam("w_expected"),
    )


def lease_taking() -> tuple[CTE, CTE]:
    """The step's lease taken for a delivery, as CTEs of one statement that also reads
    the run (:func:`shared.db.repos.snapshots.entered_snapshot`): ``(lease, counted)``,
    ``lease`` the taken lease's row (none: not taken), ``counted`` the retry it counts
    on its run (a CTE the statement must carry, or it is never run).

    Taken only while the run is at ``w_expected`` (the step's status), and exactly one
    of two ways, so no row is written twice in the statement: a step parked on a call
    with its hold still live is resumed (a new fence, the same delivery count); any
    other is entered (a first delivery inserts the row; a later one takes a lapsed
    lease, or one the reconciler left, and counts a retry on its run).
    Both judge the row as the statement's snapshot shows it, and Postgres re-checks a
    row another transaction changed meanwhile before writing it: a lease someone else
    took first is not taken. Binds: ``w_run_id``, ``w_step_id``, ``w_expected``,
    ``owner``, ``lease``, ``worker_version``, ``task_id``."""
    t = _STEPS.c
    run_id: BindParameter[Any] = bindparam("w_run_id", type_=String)
    step_id: BindParameter[Any] = bindparam("w_step_id", type_=String)
    owner: BindParameter[Any] = bindparam("owner", type_=String)
    version: BindParameter[Any] = bindparam("worker_version", type_=String)
    task_id: BindParameter[Any] = bindparam("task_id", type_=String)
    expires = _lease_expiry()
    running = StepRunStatus.RUNNING.value
    at_step = _run_at_expected_status()

    def parked_live(row: Any) -> ColumnElement[bool]:
        return and_(
            row.status == running,
            row.parked_on.is_not(None),
            row.lease_expires_at >= db_now(),
        )

    resumed = (
        update(_STEPS)
        .where(t.run_id == run_id, t.step_id == step_id, parked_live(t), at_step)
        .values(
            fence=t.fence + 1,
            lease_owner=owner,
            lease_expires_at=expires,
            app_version=version,
            parked_on=None,
            task_id=task_id,
        )
        .returning(t.run_id, t.fence, t.deliveries, t.app_version, t.parked_work_ms)
        .cte("resumed")
    )
    seen = _STEPS.alias("seen")
    parked_now = exists().where(
        seen.c.run_id == run_id, seen.c.step_id == step_id, parked_live(seen.c)
    )
    entered = (
        insert(_STEPS)
        .from_select(
            _ENTERED_COLUMNS,
            select(
                run_id,
                step_id,
                literal(running),
                db_now(),
                literal(1),
                literal(1),
                owner,
                expires,
                version,
                task_id,
            ).where(at_step, ~parked_now),
            include_defaults=False,  # the round's columns take their server defaults
        )
        .on_conflict_do_update(
            index_elements=[t.run_id, t.step_id],
            set_={
                "deliveries": t.deliveries + 1,
                "fence": t.fence + 1,
                "lease_owner": owner,
                "lease_expires_at": expires,
                "app_version": version,
                "parked_on": None,
                "task_id": task_id,
            },
            where=(t.status == running)
            & (
                (t.lease_expires_at.is_(None))
                | (t.lease_expires_at < db_now())
                | (t.lease_owner == RECONCILER)
            ),
        )
        .returning(t.run_id, t.fence, t.deliveries, t.app_version, t.parked_work_ms)
        .cte("entered")
    )
    counted = (
        update(_RUNS)
        .where(_RUNS.c.id == entered.c.run_id, entered.c.deliveries > 1)
        .values(retry_count=_RUNS.c.retry_count + 1)
        .cte("counted_retry")
    )
    lease = union_all(
        select(
            resumed.c.fence, resumed.c.deliveries, resumed.c.app_version, resumed.c.parked_work_ms
        ),
        select(
            entered.c.fence, entered.c.deliveries, entered.c.app_version, entered.c.parked_work_ms
        ),
    ).cte("lease")
    return lease, counted


def _ours() -> ColumnElement[bool]:
    """The step row of this delivery: its run, its step, its fence, still running."""
    t = _STEPS.c
    # Not named like a column: an UPDATE reserves column names for its SET clause.
    return and_(
        t.run_id == bindparam("w_run_id"),
        t.step_id == bindparam("w_step_id"),
        t.fence == bindparam("w_fence"),
        t.status == StepRunStatus.RUNNING.value,
    )


# Hot-path statements are built once: constructing one costs more CPU than running it.
_RENEW = (
    update(_STEPS).where(_ours()).values(lease_expires_at=_lease_expiry()).returning(_STEPS.c.id)
)


def lease_held() -> tuple[ColumnElement[int], ColumnElement[str | None]]:
    """``renewed`` (1 if our lease was renewed, 0 if a newer delivery holds the step)
    and the run's ``status``, as columns of a statement that holds the lease (binds
    ``w_run_id``, ``w_step_id``, ``w_fence``, ``lease``; the caller raises, rolling the
    renewal back, when the status is not the step's). Listed first, the renewal runs
    before the statement's other writes: the step's row is locked first, as it was
    when the hold was a statement of its own."""
    renewed = _RENEW.cte("renewed")
    held = select(func.count()).select_from(renewed).scalar_subquery().label("renewed")
    status = select(_RUNS.c.status).where(_RUNS.c.id == bindparam("w_run_id")).scalar_subquery()
    return held, status.label("status")


def renewal_at_step() -> CTE:
    """Our lease renewed (the ``renewed`` CTE: the step row's id, or no row) only while
    the run is at ``w_expected`` (the step's status), for a statement run alone: a
    statement whose caller refuses on a moved run leaves no renewal behind, with nothing
    to roll it back. Binds those of :func:`lease_held` and ``w_expected``."""
    return _RENEW.where(_run_at_expected_status()).cte("renewed")


def _hold_statement() -> Select[int, str | None]:
    """Renew the lease and read the run's status, in one round trip."""
    return select(*lease_held())


_HOLD = _hold_statement()


def _finish_statement(status: str, output: str, error: str) -> ReturningUpdate[tuple[int]]:
    """Record the outcome on our row, its values bound under the names given."""
    return (
        update(_STEPS)
        .where(_ours())
        .values(
            status=bindparam(status),
            output=bindparam(output),
            error=bindparam(error),
            finished_at=db_now(),
            # One statement: the duration is computed from the stored start in SQL.
            duration_ms=cast(
                func.floor(func.extract("epoch", db_now() - _STEPS.c.started_at) * 1000),
                Integer,
            ),
            lease_expires_at=None,
        )
        .returning(_STEPS.c.id)
    )


_FINISH = _finish_statement("status", "output", "error")


@cache
def _finish_moving_statement(
    keys: frozenset[str], with_artifacts: bool = False
) -> ReturningUpdate[tuple[str]]:
    """The outcome recorded on our row and the run moved, in one statement: the run's
    UPDATE (:func:`guarded_move`) runs only if the step's matched, so a fenced-off
    delivery moves nothing; a run that moved first moves nothing either, and the caller
    rolls the step's record back. The step's values are bound as ``step_status``,
    ``step_output``, ``step_error`` (the run's move binds its own ``status``, ``error``).
    ``with_artifacts``: the outcome's artifacts are stored by the same statement
    (:func:`_artifacts_put`), rolled back with the rest."""
    finished = _finish_statement("step_status", "step_output", "step_error").cte("finished")
    moving = guarded_move(keys, "w_run_id", exists(select(finished.c.id)))
    return moving.add_cte(_artifacts_put()) if with_artifacts else moving


_ARTIFACT_ARRAYS = (
    ("art_kinds", "kind", String),
    ("art_names", "name", String),
    ("art_media", "media_type", String),
    ("art_contents", "content", LargeBinary),
    ("art_sizes", "size", Integer),
    ("art_sha256", "sha256", String),
)


def _artifacts_put() -> CTE:
    """Artifacts of our step stored once each (a redelivered step keeps the first), as
    one statement whatever their number: their columns bound as parallel arrays
    (``art_kinds``, ``art_names``...; :func:`artifact_arrays`) and read back as rows by
    ``unnest``. The table's checks hold each size and sha256 to its content."""
    given = (
        func.unnest(*(bindparam(key, type_=ARRAY(kind)) for key, _c, kind in _ARTIFACT_ARRAYS))
        .table_valued(*(column for _k, column, _t in _ARTIFACT_ARRAYS))
        .render_derived(name="given")
    )
    columns = [column for _k, column, _t in _ARTIFACT_ARRAYS]
    rows = select(
        bindparam("w_run_id", type_=String),
        bindparam("w_step_id", type_=String),
        *(given.c[column] for column in columns),
    )
    return (
        insert(_ARTIFACTS)
        .from_select(["run_id", "step_id", *columns], rows)
        .on_conflict_do_nothing(
            index_elements=[_ARTIFACTS.c.run_id, _ARTIFACTS.c.step_id, _ARTIFACTS.c.name]
        )
        .returning(_ARTIFACTS.c.id)
        .cte("put")
    )


@dataclass(frozen=True)
class NewArtifact:
    """An artifact to store with an outcome (its size and sha256 computed here)."""

    kind: ArtifactKind
    name: str
    content: bytes
    media_type: str


def artifact_arrays(artifacts: Sequence[NewArtifact]) -> dict[str, list[Any]]:
    """The parallel arrays :func:`_artifacts_put` binds, one element per artifact."""
    return {
        "art_kinds": [a.kind.value for a in artifacts],
        "art_names": [a.name for a in artifacts],
        "art_media": [a.media_type for a in artifacts],
        "art_contents": [a.content for a in artifacts],
        "art_sizes": [len(a.content) for a in artifacts],
        "art_sha256": [sha256_hex(a.content) for a in artifacts],
    }


def park_statement(op_key: str) -> ReturningUpdate[tuple[int, str]]:
    """Hand our lease to the sent call bound as ``op_key`` (``w_run_id``, ``w_step_id``,
    ``w_fence``, ``lease``, ``work_ms`` too); returns the row's id and the run's status."""
    return (
        update(_STEPS)
        .where(_ours())
        .values(
            parked_on=bindparam(op_key, type_=String),
            lease_owner=PARKED,
            lease_expires_at=_lease_expiry(),
            parked_work_ms=_STEPS.c.parked_work_ms + bindparam("work_ms", type_=Integer),
        )
        # The run's status, read in the same statement: a cancel that came while the
        # prompt was being sent is seen by the parker at no extra round trip.
        .returning(
            _STEPS.c.id,
            select(_RUNS.c.status)
            .where(_RUNS.c.id == _STEPS.c.run_id)
            .scalar_subquery()
            .label("run_status"),
        )
    )


_PARK = park_statement("op_key").returning(lazy_commit())  # committed lazily, as a wake-up is
_RELEASE = update(_STEPS).where(_ours()).values(lease_expires_at=None).returning(_STEPS.c.id)
_PUT_ARTIFACT = (
    insert(_ARTIFACTS)
    .values(**bound("run_id", "step_id", "kind", "name", "media_type", "content", "size", "sha256"))
    .on_conflict_do_nothing(
        index_elements=[_ARTIFACTS.c.run_id, _ARTIFACTS.c.step_id, _ARTIFACTS.c.name]
    )
)


@dataclass(frozen=True)
class Entered:
    fence: int
    deliveries: int  # 1 on the first delivery of this step: nothing of it ran before
    app_version: str | None
    parked_work_ms: int  # git ms this round's parked deliveries measured


@dataclass(frozen=True)
class Stalled:
    run_id: str
    checkpoint_id: int | None  # None: no delivery ever entered the step
    lease_owner: str | None


class StepRunRepo(PrebuiltRepo):
    def park(
        self,
        run_id: str,
        step: StepId,
        fence: int,
        *,
        op_key: str,
        hold_s: float,
        work_ms: int = 0,
    ) -> str | None:
        """Hand our lease to the sent call ``op_key`` for ``hold_s`` (its deadline): the
        worker's thread is free, and the first wake-up (or the sweep) resumes the step.
        ``work_ms``: the git time this delivery spent, kept for the recording delivery.
        The run's status once parked; None if a newer delivery fenced us off."""
        params = {
            "w_run_id": run_id,
            "w_step_id": step.value,
            "w_fence": fence,
            "op_key": op_key,
            "lease": timedelta(seconds=hold_s),
            "work_ms": work_ms,
        }
        row = direct.execute(self.where, _PARK, params).first()
        return None if row is None else str(row[1])

    def release(self, run_id: str, step: StepId, fence: int) -> bool:
        """Give up our lease without an outcome: the next delivery may enter at once."""
        params = {"w_run_id": run_id, "w_step_id": step.value, "w_fence": fence}
        return direct.execute(self.where, _RELEASE, params).scalar_one_or_none() is not None

    def renew(self, run_id: str, step: StepId, fence: int, lease_s: float) -> bool:
        """Extend our lease; False if a newer delivery fenced us off."""
        params = {
            "w_run_id": run_id,
            "w_step_id": step.value,
            "w_fence": fence,
            "lease": timedelta(seconds=lease_s),
        }
        return direct.execute(self.where, _RENEW, params).scalar_one_or_none() is not None

    def hold(
        self, run_id: str, step: StepId, fence: int, lease_s: float
    ) -> tuple[str | None, bool]:
        """Extend our lease and read the run's status in one statement: (the status,
        None if the run is gone; whether our fence still held the lease)."""
        params = {
            "w_run_id": run_id,
            "w_step_id": step.value,
            "w_fence": fence,
            "lease": timedelta(seconds=lease_s),
        }
        row = direct.execute(self.where, _HOLD, params).one()
        status: str | None = row.status
        return status, bool(row.renewed)

    def get(self, run_id: str, step: StepId) -> StepRun | None:
        return self.session.execute(
            select(StepRun)
            .where(StepRun.run_id == run_id, StepRun.step_id == step.value)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def finish(
        self,
        run_id: str,
        step: StepId,
        *,
        status: StepRunStatus,
        fence: int,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Record the outcome iff our fencing token is still current (else False)."""
        params = {
            "w_run_id": run_id,
            "w_step_id": step.value,
            "w_fence": fence,
            "status": status.value,
            "output": output,
            "error": error,
        }
        return direct.execute(self.where, _FINISH, params).scalar_one_or_none() is not None

    def finish_moving_run(
        self,
        run_id: str,
        step: StepId,
        *,
        status: StepRunStatus,
        fence: int,
        output: dict[str, Any] | None,
        error: str | None,
        run_move: dict[str, object],
        artifacts: Sequence[NewArtifact] = (),
    ) -> bool:
        """Record the outcome iff our fencing token is still current, and move the run
        as ``run_move`` says (:func:`shared.db.repos.runs.move_values`) iff it is still in
        its ``from_status``, in one statement; False if either did not hold (the caller
        rolls back: the step's record must not stand without the run's move).
        ``artifacts`` are stored by the same statement, each once."""
        params: dict[str, Any] = {
            **run_move,
            "w_run_id": run_id,
            "w_step_id": step.value,
            "w_fence": fence,
            "step_status": status.value,
            "step_output": output,
            "step_error": error,
        }
        if artifacts:
            params |= artifact_arrays(artifacts)
        statement = _finish_moving_statement(frozenset(run_move), bool(artifacts))
        return direct.execute(self.where, statement, params).scalar_one_or_none() is not None

    def for_run(self, run_id: str) -> list[StepRun]:
        return list(
            self.session.execute(
                select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)
            ).scalars()
        )

    def lock_stalled(
        self, step: StepId, status: str, *, never_entered_before: datetime, limit: int
    ) -> list[Stalled]:
        """Runs at ``status`` whose ``step`` is not progressing, their rows locked (SKIP LOCKED).

        Not progressing: no checkpoint and the run unmoved since ``never_entered_before``,
        or a running checkpoint whose lease (a database time) has expired.
        """
        checkpoint = aliased(StepRun)
        rows = self.session.execute(
            select(Run.id, checkpoint.id, checkpoint.lease_owner)
            .outerjoin(
                checkpoint,
                and_(checkpoint.run_id == Run.id, checkpoint.step_id == step.value),
            )
            .where(
                Run.status == status,
                or_(
                    and_(checkpoint.id.is_(None), Run.updated_at < never_entered_before),
                    # Leases are database times: so is their deadline.
                    and_(
                        checkpoint.status == StepRunStatus.RUNNING.value,
                        checkpoint.lease_expires_at < db_now(),
                    ),
                ),
            )
            .order_by(Run.updated_at)
            .limit(limit)
            .with_for_update(of=Run, skip_locked=True)
        ).all()
        return [Stalled(run_id, checkpoint_id, owner) for run_id, checkpoint_id, owner in rows]

    def new_round(
        self, run_id: str, step: StepId, *, round_input: dict[str, Any], lease_s: float
    ) -> int | None:
        """Start the step's next round on its ended checkpoint; return the round (None:
        the step has no ended checkpoint to start again).

        The ended round is kept in ``step_rounds`` first. The row is then running again
        with no delivery yet (the next one enters as a first delivery, counting no
        retry), a new fence (no delivery of an earlier round can record into this one),
        and a lease handed to the next delivery (if the send is lost, the reconciler
        re-sends once it lapses). Its attempts follow the ledger's last for the step:
        every call of the round is a new op_key.
        """
        ended = (
            StepRun.run_id == run_id,
            StepRun.step_id == step.value,
            StepRun.status.in_([StepRunStatus.SUCCEEDED.value, StepRunStatus.FAILED.value]),
        )
        kept = (
            "run_id", "step_id", "round", "status", "deliveries", "attempt_base",
            "round_input", "output", "error", "started_at", "finished_at", "duration_ms",
        )  # fmt: skip
        self.session.execute(
            insert(StepRound).from_select(
                list(kept), select(*(getattr(StepRun, c) for c in kept)).where(*ended)
            )
        )
        last_attempt = (
            select(func.coalesce(func.max(OpenCodeCall.attempt), 0))
            .where(OpenCodeCall.run_id == run_id, OpenCodeCall.step_id == step.value)
            .scalar_subquery()
        )
        return self.session.execute(
            update(StepRun)
            .where(*ended)
            .values(
                round=StepRun.round + 1,
                attempt_base=last_attempt,
                round_input=round_input,
                status=StepRunStatus.RUNNING.value,
                deliveries=0,
                fence=StepRun.fence + 1,
                lease_owner=RECONCILER,
                lease_expires_at=db_now() + timedelta(seconds=lease_s),
                output=None,
                error=None,
                started_at=db_now(),
                finished_at=None,
                duration_ms=None,
                parked_on=None,
                parked_work_ms=0,
            )
            .returning(StepRun.round)
        ).scalar_one_or_none()

    def hand_lease_to_next_delivery(self, checkpoint_id: int, lease_s: float) -> None:
        """Give an expired lease to the reconciler, whose re-sent delivery may take it."""
        self.session.execute(
            update(StepRun)
            .where(StepRun.id == checkpoint_id)
            .values(lease_owner=RECONCILER, lease_expires_at=db_now() + timedelta(seconds=lease_s))
        )


def _plan_cards(what: Any, run_id: str) -> Select[Any]:
    """``what`` of the run's plan cards (CompileST's, one per revision), oldest first."""
    return (
        select(what)
        .where(
            Artifact.run_id == run_id,
            Artifact.step_id == StepId.COMPILE.value,
            Artifact.kind == ArtifactKind.PLAN_CARD.value,
        )
        .order_by(Artifact.id)
    )


@dataclass(frozen=True)
class Decision:
    """The human decision on one plan digest, as the pages and the API show it."""

    decision: str
    approver: str
    comment: str | None
    approved_at: datetime | None
    decided_at: datetime


@dataclass(frozen=True)
class CurrentPlan:
    """A run's current plan card as one statement reads it (see :func:`current_plan`)."""

    run_id: str
    status: str
    plan_sha256: str | None
    has_cards: bool  # any plan card at all (one whose digest is not the run's: fail closed)
    content: bytes | None  # the card whose digest the run holds
    decision: Decision | None


def _current_plan_statement() -> Select[Any]:
    t, a, p = _RUNS.c, _ARTIFACTS.c, table_of(PlanApproval).c
    cards = and_(
        a.run_id == t.id,
        a.step_id == StepId.COMPILE.value,
        a.kind == ArtifactKind.PLAN_CARD.value,
    )
    card = (
        select(a.content)
        .where(cards, a.sha256 == t.plan_sha256)
        .order_by(a.id)
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            t.id,
            t.status,
            t.plan_sha256,
            exists().where(cards).label("has_cards"),
            card.label("content"),
            p.decision,
            p.approver,
            p.comment,
            p.approved_at,
            p.decided_at,
        )
        .outerjoin(_APPROVALS, and_(p.run_id == t.id, p.plan_sha256 == t.plan_sha256))
        .where(t.id == bindparam("run_id"))
    )


_CURRENT_PLAN = _current_plan_statement()


def current_plan(where: direct.Where, run_id: str) -> CurrentPlan | None:
    """The run, the plan card its digest names and the decision on it, in ONE statement
    (the API reads it outside a transaction); None: no such run."""
    row = direct.execute(where, _CURRENT_PLAN, {"run_id": run_id}).one_or_none()
    if row is None:
        return None
    decided = (
        None
        if row.decision is None
        else Decision(row.decision, row.approver, row.comment, row.approved_at, row.decided_at)
    )
    return CurrentPlan(row.id, row.status, row.plan_sha256, row.has_cards, row.content, decided)


class ArtifactRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def put(
        self,
        run_id: str,
        step: StepId,
        *,
        kind: ArtifactKind,
        name: str,
        content: bytes,
        media_type: str,
    ) -> str:
        """Store an artifact once (a redelivered step keeps the first); return its sha256."""
        digest = sha256_hex(content)
        direct.execute(
            self.session,
            _PUT_ARTIFACT,
            {
                "run_id": run_id,
                "step_id": step.value,
                "kind": kind.value,
                "name": name,
                "media_type": media_type,
                "content": content,
                "size": len(content),
                "sha256": digest,
            },
        )
        return digest

    def get(self, run_id: str, step: StepId, name: str) -> Artifact | None:
        return self.session.execute(
            select(Artifact).where(
                Artifact.run_id == run_id, Artifact.step_id == step.value, Artifact.name == name
            )
        ).scalar_one_or_none()

    def for_run(self, run_id: str) -> list[Artifact]:
        return list(
            self.session.execute(
                select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
            ).scalars()
        )

    def catalog(self, run_id: str) -> list[Artifact]:
        """A run's artifacts without their content (listings must not load blobs)."""
        return list(
            self.session.execute(
                select(Artifact)
                .where(Artifact.run_id == run_id)
                .order_by(Artifact.id)
                .options(defer(Artifact.content, raiseload=True))
            ).scalars()
        )

    def plan_digests(self, run_id: str) -> list[str]:
        """The digest of every plan revision of the run, oldest first (no blobs read)."""
        return list(self.session.execute(_plan_cards(Artifact.sha256, run_id)).scalars())

    def plan_revisions(self, run_id: str) -> list[Artifact]:
        """Every plan card of the run (one per revision), oldest first."""
        return list(self.session.execute(_plan_cards(Artifact, run_id)).scalars())

    def named(self, run_id: str, name: str) -> list[Artifact]:
        """Every step's artifact called ``name``: a name alone may match several steps."""
        return list(
            self.session.execute(
                select(Artifact)
                .where(Artifact.run_id == run_id, Artifact.name == name)
                .order_by(Artifact.id)
            ).scalars()
        )
