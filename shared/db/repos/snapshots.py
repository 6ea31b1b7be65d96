"""What a step reads about its run, in one statement.

A step used to read the run, its intent, the succeeded steps' outputs, the approval of
the current plan and the plan artifact in five round trips; this is one SELECT with
scalar subqueries, read in the same transaction that takes the step's lease.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    BindParameter,
    ColumnElement,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.models import Artifact, Intent, OpenCodeCall, PlanApproval, Run, StepRun
from shared.db.repos.ledger import AGED_COLUMNS, CALL_AGE, recorded_call
from shared.db.repos.steps import Entered, lease_taking
from shared.domain.call_record import AgedRecord, StepLedger
from shared.domain.run_machine import STEP_STATUS, StepId
from shared.domain.vocab import ArtifactKind, Decision, StepRunStatus


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    status: str
    app_version: str
    contract_version: str | None  # the step contract the run was started under
    plan_sha256: str | None
    branch: str | None
    worktree_path: str | None
    goal: str
    repo_path: str
    base_ref: str
    base_commit: str | None  # pinned at submit, with the repository's identity and policy
    repo_device: int | None
    repo_inode: int | None
    policy: dict[str, Any] | None
    approved_at: datetime | None  # of the run's current plan digest, if approved
    plan: dict[str, Any] | None  # None unless plan.json's sha256 is plan_sha256
    outputs: dict[str, dict[str, Any]]  # succeeded steps only
    round: int = 1  # the step asked about: its round (see shared.domain.rounds)
    attempt_base: int = 0  # the ledger attempt the round's first call follows
    round_input: dict[str, Any] | None = None  # what the round was asked
    ledger: StepLedger = field(default_factory=StepLedger)  # of the step asked about


def _snapshot_query(taking: tuple[CTE, CTE] | None = None) -> Select[*tuple[Any, ...]]:
    """Built once: constructing a statement costs more CPU than running it here.
    ``taking``: the step's lease taken in the same statement (:func:`lease_taking`),
    its row's columns added (NULL: not taken), and the run and step bound as
    ``w_run_id`` and ``w_step_id``: named like no column, so no UPDATE of the statement
    could read them as a SET (``run_id``, ``step_id`` otherwise)."""
    prefix = "" if taking is None else "w_"
    run_key: BindParameter[Any] = bindparam(f"{prefix}run_id", type_=String)
    step_key: BindParameter[Any] = bindparam(f"{prefix}step_id", type_=String)
    approved_at = (
        select(PlanApproval.approved_at)
        .where(
            PlanApproval.run_id == Run.id,
            PlanApproval.plan_sha256 == Run.plan_sha256,
            PlanApproval.decision == Decision.APPROVED.value,
        )
        .scalar_subquery()
    )
    # Only the bytes the run's digest is over (whichever revision's plan card they are):
    # a step never reads a plan other than the one the approval gate judges.
    plan = (
        select(Artifact.content)
        .where(
            Artifact.run_id == Run.id,
            Artifact.step_id == StepId.COMPILE.value,
            Artifact.kind == ArtifactKind.PLAN_CARD.value,
            Artifact.sha256 == Run.plan_sha256,
        )
        .order_by(Artifact.id)
        .limit(1)
        .scalar_subquery()
    )
    empty: ColumnElement[Any] = literal_column("'{}'::jsonb")
    outputs = (
        select(
            func.coalesce(
                func.jsonb_object_agg(StepRun.step_id, func.coalesce(StepRun.output, empty)),
                empty,
            )
        )
        .where(StepRun.run_id == Run.id, StepRun.status == StepRunStatus.SUCCEEDED.value)
        .scalar_subquery()
    )
    # The call the asked step is parked on, as the ledger holds it: the delivery the
    # collector woke reads it here, with its lease, instead of in a claim of its own.
    pairs: list[ColumnElement[Any]] = []
    for name in AGED_COLUMNS:
        pairs += [literal_column(f"'{name}'"), getattr(OpenCodeCall, name)]
    parked_call = (
        select(func.jsonb_build_object(*pairs, literal_column("'age'"), CALL_AGE))
        .join(StepRun, StepRun.parked_on == OpenCodeCall.op_key)
        .where(
            StepRun.run_id == Run.id,
            StepRun.step_id == step_key,
            StepRun.status == StepRunStatus.RUNNING.value,
        )
        .scalar_subquery()
    )
    last_attempt = (
        select(func.max(OpenCodeCall.attempt))
        .where(OpenCodeCall.run_id == Run.id, OpenCodeCall.step_id == step_key)
        .scalar_subquery()
    )
    # The asked step's round, as one value (a statement per field would cost more).
    round_info = (
        select(func.jsonb_build_array(StepRun.round, StepRun.attempt_base, StepRun.round_input))
        .where(StepRun.run_id == Run.id, StepRun.step_id == step_key)
        .scalar_subquery()
    )
    snapshot = (
        select(
            Run.id,
            Run.status,
            Run.app_version,
            Run.contract_version,
            Run.plan_sha256,
            Run.branch,
            Run.worktree_path,
            Intent.goal,
            Intent.repo_path,
            Intent.base_ref,
            Intent.base_commit,
            Intent.repo_device,
            Intent.repo_inode,
            Intent.policy,
            approved_at.label("approved_at"),
            plan.label("plan"),
            outputs.label("outputs"),
            round_info.label("round_info"),
            parked_call.label("parked_call"),
            last_attempt.label("last_attempt"),
        )
        .join(Intent, Intent.id == Run.intent_id)
        .where(Run.id == run_key)
    )
    if taking is None:
        return snapshot
    lease, counted = taking
    return (
        snapshot.add_columns(
            lease.c.fence.label("lease_fence"),
            lease.c.deliveries.label("lease_deliveries"),
            lease.c.app_version.label("lease_app_version"),
            lease.c.parked_work_ms.label("lease_parked_work_ms"),
        )
        .outerjoin(lease, true())
        .add_cte(counted)
    )


_SNAPSHOT = _snapshot_query()
_ENTERING = _snapshot_query(lease_taking())


def run_snapshot(s: Session, run_id: str, step: StepId | None = None) -> RunSnapshot | None:
    """The run as a step sees it; with ``step``, that step's round and the call it is
    parked on (if any)."""
    params = {"run_id": run_id, "step_id": step.value if step is not None else None}
    row = direct.execute(s, _SNAPSHOT, params).one_or_none()
    return None if row is None else _snapshot_of(row)


def entered_snapshot(
    s: direct.Where,
    run_id: str,
    step: StepId,
    *,
    owner: str,
    lease_s: float,
    app_version: str,
    task_id: str | None = None,
) -> tuple[RunSnapshot, Entered | None] | None:
    """The run as ``step`` sees it and, in the same statement, the step's lease taken
    for this delivery if the run is at the step's status (see :func:`lease_taking`):
    None for an unknown run; the lease None if not taken (the run moved on, or another
    delivery holds a live lease). The snapshot is the run before the lease: a step's
    round, its parked call and its ledger as the delivery found them."""
    params = {
        "w_run_id": run_id,
        "w_step_id": step.value,
        "w_expected": STEP_STATUS[step].value,
        "owner": owner,
        "lease": timedelta(seconds=lease_s),
        "worker_version": app_version,
        "task_id": task_id,
    }
    row = direct.execute(s, _ENTERING, params).one_or_none()
    if row is None:
        return None
    entered = (
        None
        if row.lease_fence is None
        else Entered(
            row.lease_fence, row.lease_deliveries, row.lease_app_version, row.lease_parked_work_ms
        )
    )
    return _snapshot_of(row), entered


def _snapshot_of(row: Any) -> RunSnapshot:
    round_, attempt_base, round_input = row.round_info or (1, 0, None)
    return RunSnapshot(
        run_id=row.id,
        status=row.status,
        app_version=row.app_version,
        contract_version=row.contract_version,
        plan_sha256=row.plan_sha256,
        branch=row.branch,
        worktree_path=row.worktree_path,
        goal=row.goal,
        repo_path=row.repo_path,
        base_ref=row.base_ref,
        base_commit=row.base_commit,
        repo_device=row.repo_device,
        repo_inode=row.repo_inode,
        policy=row.policy,
        approved_at=row.approved_at,
        plan=json.loads(row.plan) if row.plan is not None else None,
        outputs=dict(row.outputs or {}),
        round=int(round_),
        attempt_base=int(attempt_base),
        round_input=round_input if isinstance(round_input, dict) else None,
        ledger=StepLedger(_parked_call(row.parked_call), int(row.last_attempt or 0)),
    )


def _parked_call(found: dict[str, Any] | None) -> AgedRecord | None:
    if found is None:
        return None
    return recorded_call(found, float(found["age"]))
