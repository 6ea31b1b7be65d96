"""Intents and runs; every status change is a guarded UPDATE."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Protocol

from sqlalchemy import ColumnElement, bindparam, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from shared.db import direct
from shared.db.models import Intent, Run, bound, table_of
from shared.domain.budget import Budget, Ledger
from shared.domain.run_machine import RunStatus, StepId, Transition

_RUNS = table_of(Run)
_INTENTS = table_of(Intent)
_STATUS_OF = select(_RUNS.c.status).where(_RUNS.c.id == bindparam("run_id"))
_EVENT_FIELDS = select(
    _RUNS.c.id, _RUNS.c.status, _RUNS.c.last_step, _RUNS.c.next_action, _RUNS.c.event_seq
).where(_RUNS.c.id == bindparam("run_id"))


class EventFields(Protocol):
    """What a run event carries (services.api.events): read for every event sent."""

    id: str
    status: str
    last_step: str | None
    next_action: str
    event_seq: int


def event_fields(conn: direct.Where, run_id: str) -> EventFields | None:
    """The run's event fields: one statement, no ORM object. An SSE stream reads them
    for every event it sends, on the API's autocommit connection (no BEGIN/ROLLBACK
    around one SELECT of one row)."""
    row: EventFields | None = direct.execute(conn, _EVENT_FIELDS, {"run_id": run_id}).one_or_none()
    return row


def guarded_move(
    keys: frozenset[str], run_key: str, *also: ColumnElement[bool]
) -> ReturningUpdate[tuple[str]]:
    """The run UPDATE that stores a move: the columns ``keys`` names (besides the run's
    own ``run_key`` and ``from_status``), each bound by its name, iff the run is still
    in ``from_status`` (and ``also`` holds); returns the run's id when it moved."""
    columns = sorted(keys - {run_key, "from_status"})
    return (
        update(_RUNS)
        .where(_RUNS.c.id == bindparam(run_key), _RUNS.c.status == bindparam("from_status"), *also)
        .values({c: bindparam(c) for c in columns})
        .returning(_RUNS.c.id)
    )


@cache
def _apply_statement(keys: frozenset[str]) -> ReturningUpdate[tuple[str]]:
    """The guarded run UPDATE for one set of changed columns, built once per set."""
    return guarded_move(keys, "run_id")


def move_values(
    move: Transition,
    now: datetime,
    *,
    step: StepId | None = None,
    error: str | None = None,
    plan_sha256: str | None = None,
    workspace: tuple[str, str] | None = None,
    clear_error: bool = False,
) -> dict[str, object]:
    """The run's columns ``move`` sets, and ``from_status`` for its guard (see
    :meth:`RunRepo.apply`)."""
    values: dict[str, object] = {
        "status": move.to_status.value,
        "next_action": move.next_action.value,
        "updated_at": now,
    }
    if move.dispatch is not None:
        values["last_step"] = move.dispatch.value
    elif step is not None:
        values["last_step"] = step.value
    if move.to_status.is_terminal:
        values["finished_at"] = now
    elif move.from_status.is_terminal:  # a retried run is running again
        values["finished_at"] = None
    if error is not None:
        values["error"] = error
    elif clear_error:
        values["error"] = None
    if plan_sha256 is not None:
        values["plan_sha256"] = plan_sha256
    if workspace is not None:
        values["branch"], values["worktree_path"] = workspace
    values["from_status"] = move.from_status.value
    return values


_CREATE_STARTED = (
    insert(_RUNS)
    .from_select(
        [
            "id",
            "intent_id",
            "status",
            "last_step",
            "next_action",
            "updated_at",
            "retry_count",
            "app_version",
            "contract_version",
            # the run's budget starts as its intent's (raising it changes the run's)
            "budget_usd_micro",
            "budget_tokens",
        ],
        select(
            _INTENTS.c.id,
            _INTENTS.c.id,
            bindparam("status"),
            bindparam("last_step"),
            bindparam("next_action"),
            bindparam("updated_at"),
            literal(0),
            bindparam("app_version"),
            bindparam("contract_version"),
            _INTENTS.c.budget_usd_micro,
            _INTENTS.c.budget_tokens,
        ).where(_INTENTS.c.id == bindparam("intent_id")),
    )
    .on_conflict_do_nothing(index_elements=[_RUNS.c.id])
    .returning(_RUNS.c.id)
)
"""An intent's run, made from the intent's row in one statement (no row without an
intent), already where its start moves it."""


_INTENT_FIELDS = (
    "id",
    "repo_path",
    "goal",
    "base_ref",
    "submitted_by",
    "request_sha256",
    "base_commit",
    "repo_device",
    "repo_inode",
    "policy",
    "idempotency_key",
    "budget_usd_micro",
    "budget_tokens",
)
_ADD_INTENT = insert(_INTENTS).values(**bound(*_INTENT_FIELDS)).returning(_INTENTS.c.created_at)
"""An intent's row, every column but the server's ``created_at``, which it returns."""


class IntentRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, intent: Intent) -> Intent:
        """Insert the intent with one prebuilt statement; its server default
        (``created_at``) comes back with the INSERT's RETURNING. The intent stays a plain
        object, outside the session: an ORM flush of it cost about 1 ms of the API's CPU
        per submit, the statement a fifth of that."""
        values = {name: getattr(intent, name) for name in _INTENT_FIELDS}
        intent.created_at = direct.execute(self.session, _ADD_INTENT, values).scalar_one()
        return intent

    def get(self, intent_id: str) -> Intent | None:
        return self.session.get(Intent, intent_id)

    def by_idempotency_key(self, submitted_by: str, key: str) -> Intent | None:
        """The intent this submitter made with this Idempotency-Key, if any."""
        return self.session.execute(
            select(Intent).where(Intent.submitted_by == submitted_by, Intent.idempotency_key == key)
        ).scalar_one_or_none()


class BudgetColumns(Protocol):
    """A run's budget columns: the ORM row, or a Core row selecting them."""

    budget_usd_micro: int | None
    spent_usd_micro: int
    reserved_usd_micro: int
    budget_tokens: int | None
    spent_tokens: int
    reserved_tokens: int


def budget_of(run: BudgetColumns) -> Budget:
    """The run's budget as the pure core reads it."""
    return Budget(
        Ledger(run.budget_usd_micro, run.spent_usd_micro, run.reserved_usd_micro),
        Ledger(run.budget_tokens, run.spent_tokens, run.reserved_tokens),
    )


class RunRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, run_id: str) -> Run | None:
        return self.session.get(Run, run_id)

    def status_of(self, run_id: str) -> str | None:
        """Only the status (no ORM object): the per-attempt lease check reads just this."""
        status: str | None = direct.execute(
            self.session, _STATUS_OF, {"run_id": run_id}
        ).scalar_one_or_none()
        return status

    def reload(self, run: Run) -> None:
        """Read the row again after a guarded UPDATE changed it behind the ORM's back."""
        self.session.refresh(run)

    def get_for_update(self, run_id: str) -> Run | None:
        """Lock the run row for the rest of the transaction."""
        return self.session.execute(
            select(Run).where(Run.id == run_id).with_for_update()
        ).scalar_one_or_none()

    def count_retry(self, run_id: str) -> None:
        """One more time kodo tried something again for this run (an operator's retry)."""
        self.session.execute(
            update(Run).where(Run.id == run_id).values(retry_count=Run.retry_count + 1)
        )

    def touch(self, run_id: str, now: datetime) -> None:
        """Restart the run's never-entered clock (the reconciler just re-sent its step)."""
        self.session.execute(update(Run).where(Run.id == run_id).values(updated_at=now))

    def create_started(
        self,
        intent_id: str,
        start: Transition,
        now: datetime,
        *,
        app_version: str,
        contract_version: str,
    ) -> bool:
        """Insert the run of an intent once, from the intent's row, in the status
        ``start`` (the machine's move out of ``queued``) names: True if this call made
        it; False if the run exists already or the intent does not (ask
        :meth:`status_of` which). One statement: a run stored ``queued`` and moved on by
        a second one cost an UPDATE and a notification more per run, and no reader ever
        saw it queued (the move commits with the insert)."""
        if start.from_status is not RunStatus.QUEUED or start.dispatch is None:
            raise ValueError(f"not a run's start: {start}")
        made = direct.execute(
            self.session,
            _CREATE_STARTED,
            {
                "intent_id": intent_id,
                "status": start.to_status.value,
                "last_step": start.dispatch.value,
                "next_action": start.next_action.value,
                "updated_at": now,
                "app_version": app_version,
                "contract_version": contract_version,
            },
        ).scalar_one_or_none()
        return made is not None

    def adopt_contract(self, run_id: str, contract_version: str) -> None:
        """A run started before runs recorded a contract takes the first step's."""
        self.session.execute(
            update(Run)
            .where(Run.id == run_id, Run.contract_version.is_(None))
            .values(contract_version=contract_version)
        )

    def claim_parked(self, contract_version: str, limit: int) -> list[tuple[str, StepId]]:
        """Lock (SKIP LOCKED) runs waiting for a worker of ``contract_version``: each
        with the step it was parked at."""
        rows = self.session.execute(
            select(Run.id, Run.last_step)
            .where(
                Run.status == RunStatus.WAITING_UPGRADE.value,
                Run.contract_version == contract_version,
                Run.last_step.is_not(None),
            )
            .order_by(Run.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        return [(str(run_id), StepId(str(step))) for run_id, step in rows]

    def apply(
        self,
        run_id: str,
        move: Transition,
        now: datetime,
        *,
        step: StepId | None = None,
        error: str | None = None,
        plan_sha256: str | None = None,
        workspace: tuple[str, str] | None = None,
        clear_error: bool = False,
    ) -> bool:
        """Store ``move`` iff the run is still in ``move.from_status``.

        ``workspace`` (branch, worktree path) is stored by the same UPDATE;
        ``clear_error`` empties ``error`` (a resumed run's parking diagnostic).

        False means another actor moved the run first (a cancel, a second watcher):
        the caller must treat its own work as superseded.
        """
        values = move_values(
            move,
            now,
            step=step,
            error=error,
            plan_sha256=plan_sha256,
            workspace=workspace,
            clear_error=clear_error,
        )
        values["run_id"] = run_id
        moved = direct.execute(
            self.session, _apply_statement(frozenset(values)), values
        ).scalar_one_or_none()
        return moved is not None
