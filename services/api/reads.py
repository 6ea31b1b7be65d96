"""Read models the views render: repository calls composed, no SQL of their own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import Artifact, Intent, OpenCodeCall, PlanApproval, Run, StepRun
from shared.db.repos.approvals import ApprovalRepo
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.runs import IntentRepo
from shared.db.repos.steps import ArtifactRepo, StepRunRepo
from shared.domain.run_machine import StepId
from shared.domain.step_outcome import PLAN_ARTIFACT
from shared.errors import Conflict, NotFound
from shared.service.runs import get_run

from .errors import Unreadable

PLAN_STEP = StepId.COMPILE
PLAN_NAME = PLAN_ARTIFACT
PLAN_KIND = "plan_card"


@dataclass(frozen=True)
class RunView:
    run: Run
    steps: list[StepRun]


def run_with_steps(s: Session, run_id: str) -> RunView:
    return RunView(get_run(s, run_id), StepRunRepo(s).for_run(run_id))


@dataclass(frozen=True)
class PlanView:
    run: Run
    plan: Any
    approval: PlanApproval | None


def plan_of(s: Session, run_id: str) -> PlanView:
    """The plan CompileST wrote, with the decision on the run's current digest if any."""
    run = get_run(s, run_id)
    found = ArtifactRepo(s).get(run_id, PLAN_STEP, PLAN_NAME)
    if found is None or found.kind != PLAN_KIND:
        raise NotFound(
            f"run {run_id} has no plan yet (status {run.status})", details={"status": run.status}
        )
    try:
        plan = json.loads(found.content)
    except ValueError as exc:
        raise Unreadable(f"the plan artifact of run {run_id} is not valid JSON") from exc
    decided = ApprovalRepo(s).get(run_id, run.plan_sha256) if run.plan_sha256 else None
    return PlanView(run=run, plan=plan, approval=decided)


def calls_of(s: Session, run_id: str) -> list[OpenCodeCall]:
    get_run(s, run_id)
    return LedgerRepo(s).for_run(run_id)


def artifacts_of(s: Session, run_id: str) -> list[Artifact]:
    get_run(s, run_id)
    return ArtifactRepo(s).catalog(run_id)


def artifact_named(s: Session, run_id: str, name: str, step: StepId | None) -> Artifact:
    """One artifact by name; without ``step`` the name must be unique within the run."""
    get_run(s, run_id)
    artifacts = ArtifactRepo(s)
    if step is not None:
        found = artifacts.get(run_id, step, name)
        if found is None:
            raise NotFound(f"run {run_id} has no artifact {name!r} from {step.value}")
        return found
    matches = artifacts.named(run_id, name)
    if not matches:
        raise NotFound(f"run {run_id} has no artifact {name!r}")
    if len(matches) > 1:
        raise Conflict(
            f"several steps wrote {name!r}: pass ?step=",
            details={"steps": [m.step_id for m in matches]},
        )
    return matches[0]


@dataclass(frozen=True)
class RunPage:
    """Everything an approver looks at before deciding, read in one session."""

    run: Run
    intent: Intent
    plan: Any
    approval: PlanApproval | None
    calls: list[OpenCodeCall]
    tokens: int
    cost_usd: float


def _usage_number(usage: dict[str, Any] | None, key: str) -> float:
    value = (usage or {}).get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def run_page(s: Session, run_id: str) -> RunPage:
    run = get_run(s, run_id)
    intent = IntentRepo(s).get(run.intent_id)
    if intent is None:  # pragma: no cover - foreign key
        raise NotFound(f"intent {run.intent_id} not found")
    try:
        view: PlanView | None = plan_of(s, run_id)
    except NotFound:  # the run exists (read above): it has no plan yet
        view = None
    calls = LedgerRepo(s).for_run(run_id)
    return RunPage(
        run=run,
        intent=intent,
        plan=view.plan if view is not None else None,
        approval=view.approval if view is not None else None,
        calls=calls,
        tokens=int(sum(_usage_number(c.usage, "total_tokens") for c in calls)),
        cost_usd=sum(_usage_number(c.usage, "cost_usd") for c in calls),
    )
