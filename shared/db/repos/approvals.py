"""Plan approvals: the persisted gate between CompileST and ApplyPatchST.

Their times are the database's (``now()``), not the API host's clock: the gate's
trigger compares ``approved_at`` with a step's database-assigned start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, and_, bindparam, case, func, null, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.models import Intent, PlanApproval, Run, table_of
from shared.domain.run_machine import RunStatus
from shared.domain.vocab import Decision

_APPROVALS = table_of(PlanApproval)
_RUNS = table_of(Run)
_INTENTS = table_of(Intent)
_DECISION_COLUMNS = (
    _APPROVALS.c.id,
    _APPROVALS.c.run_id,
    _APPROVALS.c.plan_sha256,
    _APPROVALS.c.decision,
    _APPROVALS.c.approver,
    _APPROVALS.c.comment,
    _APPROVALS.c.approved_at,
    _APPROVALS.c.decided_at,
    _APPROVALS.c.dispatched_at,
)


@dataclass(frozen=True)
class Decided:
    """A recorded decision on one plan digest, as a plain record (no ORM object: the
    approve endpoint reads and writes it with two prebuilt statements)."""

    id: int
    run_id: str
    plan_sha256: str
    decision: str
    approver: str
    comment: str | None
    approved_at: datetime | None
    decided_at: datetime
    dispatched_at: datetime | None


@dataclass(frozen=True)
class DecisionGate:
    """What a decision on a run's plan is checked against, read under the run's row
    lock: the run, who submitted it, and the decision already on its current plan."""

    run_id: str
    status: str
    next_action: str
    plan_sha256: str | None
    submitted_by: str | None
    earlier: Decided | None


_GATE = (
    select(
        _RUNS.c.id.label("gate_run_id"),
        _RUNS.c.status.label("gate_status"),
        _RUNS.c.next_action.label("gate_next_action"),
        _RUNS.c.plan_sha256.label("gate_plan_sha256"),
        _INTENTS.c.submitted_by.label("gate_submitted_by"),
        *_DECISION_COLUMNS,
    )
    .select_from(
        _RUNS.join(_INTENTS, _INTENTS.c.id == _RUNS.c.intent_id).outerjoin(
            _APPROVALS,
            and_(
                _APPROVALS.c.run_id == _RUNS.c.id,
                _APPROVALS.c.plan_sha256 == _RUNS.c.plan_sha256,
            ),
        )
    )
    .where(_RUNS.c.id == bindparam("run_id"))
    .with_for_update(of=_RUNS)
)
"""The run locked, its submitter and its current plan's decision: one statement."""

_RECORD = (
    insert(_APPROVALS)
    .values(
        run_id=bindparam("run_id"),
        plan_sha256=bindparam("plan_sha256"),
        decision=bindparam("decision"),
        approver=bindparam("approver"),
        comment=bindparam("comment"),
        decided_at=func.now(),
        approved_at=case((bindparam("approved", type_=Boolean()), func.now()), else_=null()),
        dispatched_at=case((bindparam("dispatched", type_=Boolean()), func.now()), else_=null()),
    )
    .on_conflict_do_nothing(index_elements=[_APPROVALS.c.run_id, _APPROVALS.c.plan_sha256])
    .returning(*_DECISION_COLUMNS)
)

_DECISION_OF = select(*_DECISION_COLUMNS).where(
    _APPROVALS.c.run_id == bindparam("run_id"),
    _APPROVALS.c.plan_sha256 == bindparam("plan_sha256"),
)


def _decided(row: Any) -> Decided:
    return Decided(
        id=row.id,
        run_id=row.run_id,
        plan_sha256=row.plan_sha256,
        decision=row.decision,
        approver=row.approver,
        comment=row.comment,
        approved_at=row.approved_at,
        decided_at=row.decided_at,
        dispatched_at=row.dispatched_at,
    )


class ApprovalRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def gate(self, run_id: str) -> DecisionGate | None:
        """Lock the run's row for the rest of the transaction and read what a decision
        on its plan is checked against (None: no such run)."""
        row = direct.execute(self.session, _GATE, {"run_id": run_id}).one_or_none()
        if row is None:
            return None
        return DecisionGate(
            run_id=row.gate_run_id,
            status=row.gate_status,
            next_action=row.gate_next_action,
            plan_sha256=row.gate_plan_sha256,
            submitted_by=row.gate_submitted_by,
            earlier=None if row.id is None else _decided(row),
        )

    def record(
        self,
        run_id: str,
        plan_sha256: str,
        *,
        decision: Decision,
        approver: str,
        comment: str | None = None,
        dispatched: bool = False,
    ) -> tuple[Decided, bool]:
        """Insert the decision for (run, plan) once; (the row, whether this inserted it).
        A repeat returns the first one. ``dispatched``: the caller moves the run in the
        same transaction, so the row is born dispatched (the watcher never takes it)."""
        inserted = direct.execute(
            self.session,
            _RECORD,
            {
                "run_id": run_id,
                "plan_sha256": plan_sha256,
                "decision": decision.value,
                "approver": approver,
                "comment": comment,
                "approved": decision is Decision.APPROVED,
                "dispatched": dispatched,
            },
        ).one_or_none()
        if inserted is not None:
            return _decided(inserted), True
        found = self.decision_on(run_id, plan_sha256)
        if found is None:  # pragma: no cover - the conflict was this very row
            raise LookupError((run_id, plan_sha256))
        return found, False

    def decision_on(self, run_id: str, plan_sha256: str) -> Decided | None:
        """The decision recorded on (run, plan), read by a statement of its own."""
        row = direct.execute(
            self.session, _DECISION_OF, {"run_id": run_id, "plan_sha256": plan_sha256}
        ).one_or_none()
        return None if row is None else _decided(row)

    def claim_undispatched(self, limit: int = 100, run_id: str | None = None) -> list[PlanApproval]:
        """Approved plans of runs still at waiting_input, locked so two watchers never share."""
        query = (
            select(PlanApproval)
            .join(Run, Run.id == PlanApproval.run_id)
            .where(
                PlanApproval.decision == Decision.APPROVED.value,
                PlanApproval.dispatched_at.is_(None),
                PlanApproval.plan_sha256 == Run.plan_sha256,
                Run.status == RunStatus.WAITING_INPUT.value,
            )
        )
        if run_id is not None:
            query = query.where(PlanApproval.run_id == run_id)
        return list(
            self.session.execute(
                query.order_by(PlanApproval.id)
                .limit(limit)
                .with_for_update(of=PlanApproval, skip_locked=True)
            ).scalars()
        )

    def mark_dispatched(self, approval_id: int) -> None:
        self.session.execute(
            update(PlanApproval)
            .where(PlanApproval.id == approval_id)
            .values(dispatched_at=func.now())
        )
