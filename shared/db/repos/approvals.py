"""Plan approvals: the persisted gate between CompileST and ApplyPatchST.

Their times are the database's (``now()``), not the API host's clock: the gate's
trigger compares ``approved_at`` with a step's database-assigned start.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import PlanApproval, Run
from shared.domain.run_machine import RunStatus
from shared.domain.vocab import Decision


class ApprovalRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        run_id: str,
        plan_sha256: str,
        *,
        decision: Decision,
        approver: str,
        comment: str | None = None,
        dispatched: bool = False,
    ) -> tuple[PlanApproval, bool]:
        """Insert the decision for (run, plan) once; (the row, whether this inserted it).
        A repeat returns the first one. ``dispatched``: the caller moves the run in the
        same transaction, so the row is born dispatched (the watcher never takes it)."""
        inserted = self.session.scalars(
            insert(PlanApproval)
            .values(
                run_id=run_id,
                plan_sha256=plan_sha256,
                decision=decision.value,
                approver=approver,
                comment=comment,
                decided_at=func.now(),
                approved_at=func.now() if decision is Decision.APPROVED else None,
                dispatched_at=func.now() if dispatched else None,
            )
            .on_conflict_do_nothing(index_elements=[PlanApproval.run_id, PlanApproval.plan_sha256])
            .returning(PlanApproval)
        ).one_or_none()
        if inserted is not None:
            return inserted, True
        found = self.get(run_id, plan_sha256)
        if found is None:  # pragma: no cover
            raise LookupError((run_id, plan_sha256))
        return found, False

    def get(self, run_id: str, plan_sha256: str) -> PlanApproval | None:
        return self.session.execute(
            select(PlanApproval)
            .where(PlanApproval.run_id == run_id, PlanApproval.plan_sha256 == plan_sha256)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

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
