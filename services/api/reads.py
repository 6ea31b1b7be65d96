"""Read models the views render: repository calls composed, no SQL of their own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.models import Artifact, Intent, OpenCodeCall, Run, StepRun
from shared.db.repos import listings
from shared.db.repos.approvals import ApprovalRepo, Decided
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.listings import RunFilter
from shared.db.repos.runs import IntentRepo
from shared.db.repos.steps import ArtifactRepo, Decision, StepRunRepo, current_plan
from shared.domain.budget import micro_to_usd
from shared.domain.paging import DEFAULT_LIMIT, BadCursor, Position
from shared.domain.plan_diff import DiffLine, plan_diff
from shared.domain.rounds import WaitingQuestion
from shared.domain.run_machine import NextAction, StepId
from shared.errors import Conflict, InvalidInput, NotFound
from shared.service.runs import get_run, run_budget

from .errors import Unreadable


@dataclass(frozen=True)
class RunView:
    run: Run
    steps: list[StepRun]

    @property
    def question(self) -> str | None:
        """DecideST's question, while the run waits for the approver's answer."""
        waiting = waiting_question(self.run, self.steps)
        return None if waiting is None else waiting.text

    @property
    def question_sha256(self) -> str | None:
        """The digest an answer to it names (WaitingQuestion)."""
        waiting = waiting_question(self.run, self.steps)
        return None if waiting is None else waiting.sha256

    @property
    def budget(self) -> dict[str, Any]:
        return run_budget(self.run).to_json()


def waiting_question(run: Run, steps: list[StepRun]) -> WaitingQuestion | None:
    if run.next_action != NextAction.AWAIT_ANSWER.value:
        return None
    decide = next((s for s in steps if s.step_id == StepId.DECIDE.value), None)
    return None if decide is None else WaitingQuestion.of(decide.output, decide.round_input)


def run_with_steps(s: Session, run_id: str) -> RunView:
    return RunView(get_run(s, run_id), StepRunRepo(s).for_run(run_id))


@dataclass(frozen=True)
class PlanView:
    run_id: str
    plan_sha256: str
    plan: Any
    approval: Decision | None


def plan_of(where: direct.Where, run_id: str) -> PlanView:
    """The run's current plan (the revision whose digest the run holds), with the
    decision on it if any: one statement (``where`` may be the API's single-read
    connection)."""
    current = current_plan(where, run_id)
    if current is None:
        raise NotFound(f"run {run_id} not found")
    if current.content is None and current.has_cards:
        # fail closed: never show a plan the digest is not over
        raise Unreadable(
            f"run {run_id}'s plan digest {current.plan_sha256} is none of its plan cards'"
        )
    if current.content is None or current.plan_sha256 is None:
        raise NotFound(
            f"run {run_id} has no plan yet (status {current.status})",
            details={"status": current.status},
        )
    try:
        plan = json.loads(current.content)
    except ValueError as exc:
        raise Unreadable(f"the plan artifact of run {run_id} is not valid JSON") from exc
    return PlanView(run_id, current.plan_sha256, plan, current.decision)


@dataclass(frozen=True)
class Revision:
    """One plan of a run: its card, its digest, and the human decision on it, if any."""

    revision: int
    artifact: Artifact
    plan: Any
    decision: Decided | None


@dataclass(frozen=True)
class RevisionsView:
    run: Run
    revisions: list[Revision]
    max_revisions: int


def plan_revisions(s: Session, run_id: str, *, max_revisions: int) -> RevisionsView:
    """Every plan the run has had, oldest first: revision N is CompileST's round N."""
    run = get_run(s, run_id)
    approvals = ApprovalRepo(s)
    revisions: list[Revision] = []
    for number, card in enumerate(ArtifactRepo(s).plan_revisions(run_id), start=1):
        try:
            plan = json.loads(card.content)
        except ValueError as exc:
            raise Unreadable(f"plan revision {number} of run {run_id} is not valid JSON") from exc
        revisions.append(Revision(number, card, plan, approvals.decision_on(run_id, card.sha256)))
    return RevisionsView(run, revisions, max_revisions)


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


REVISION_DIFF_CHARS = 200_000
"""The most characters of plan-revision diffs one run page draws, newest diff first: five
plans at the contract's maxima are megabytes, and drawing their diffs on every load cost
the API seconds of CPU, every other request of its worker waiting (red-team helper-127).
Every revision is whole in ``GET /runs/{id}/plans`` and ``kodo run plans``."""


@dataclass(frozen=True)
class RevisionChange:
    """A revision and the lines of its diff from the one before that the page draws;
    ``hidden``: how many lines more it has (None: not computed, the page's room spent)."""

    revision: Revision
    lines: list[DiffLine]
    hidden: int | None


@dataclass(frozen=True)
class RunPage:
    """Everything an approver looks at before deciding, read in one session."""

    run: Run
    intent: Intent
    plan: Any
    approval: Decision | None
    calls: list[OpenCodeCall]
    tokens: int
    cost_usd: float
    revisions: list[Revision]  # every plan of the run, oldest first
    max_revisions: int
    question: WaitingQuestion | None = None  # DecideST's, while the run waits for an answer

    @property
    def budget(self) -> dict[str, Any]:
        """Spent, reserved and remaining (USD and tokens), as GET /runs/{id} shows them."""
        return run_budget(self.run).to_json()

    @property
    def plan_artifact(self) -> str | None:
        """The artifact name of the current plan (``plan.json``, ``plan.r2.json``, ...)."""
        found = [r for r in self.revisions if r.artifact.sha256 == self.run.plan_sha256]
        return found[-1].artifact.name if found else None

    def changes(self) -> list[RevisionChange]:
        """Each revision after the first with its diff from the one before, newest first,
        drawn within :data:`REVISION_DIFF_CHARS` together (an older diff past them is not
        even computed)."""
        pairs = list(zip(self.revisions, self.revisions[1:], strict=False))[::-1]
        room = REVISION_DIFF_CHARS
        found: list[RevisionChange] = []
        for old, new in pairs:
            if room <= 0:
                found.append(RevisionChange(new, [], None))
                continue
            diff = plan_diff(old.plan, new.plan)
            drawn: list[DiffLine] = []
            for line in diff:
                room -= len(line.text) + 2
                if room < 0:
                    break
                drawn.append(line)
            found.append(RevisionChange(new, drawn, len(diff) - len(drawn)))
        return found


def settled_spend(calls: list[OpenCodeCall]) -> tuple[int, float]:
    """Tokens and USD the settled ``calls`` spent, as ``app.settle_call`` wrote them: what
    the budget counts (a call cut short spends at least its reservation, migration 0027),
    so a page's figures add up to the run's."""
    settled = [c for c in calls if c.settled_at is not None]
    return (
        sum(c.spent_tokens or 0 for c in settled),
        micro_to_usd(sum(c.spent_usd_micro or 0 for c in settled)),
    )


def run_page(s: Session, run_id: str, *, max_revisions: int) -> RunPage:
    run = get_run(s, run_id)
    intent = IntentRepo(s).get(run.intent_id)
    if intent is None:  # pragma: no cover - foreign key
        raise NotFound(f"intent {run.intent_id} not found")
    try:
        view: PlanView | None = plan_of(s, run_id)
    except NotFound:  # the run exists (read above): it has no plan yet
        view = None
    calls = LedgerRepo(s).for_run(run_id)
    tokens, cost_usd = settled_spend(calls)
    return RunPage(
        run=run,
        intent=intent,
        plan=view.plan if view is not None else None,
        approval=view.approval if view is not None else None,
        calls=calls,
        tokens=tokens,
        cost_usd=cost_usd,
        revisions=plan_revisions(s, run_id, max_revisions=max_revisions).revisions,
        max_revisions=max_revisions,
        question=waiting_question(run, StepRunRepo(s).for_run(run_id)),
    )


@dataclass(frozen=True)
class RunSummary:
    """A run as a list shows it: the row, its intent, and what it has spent so far."""

    run: Run
    intent: Intent

    @property
    def cost_usd(self) -> float:
        return micro_to_usd(self.run.spent_usd_micro)

    @property
    def tokens(self) -> int:
        return self.run.spent_tokens


@dataclass(frozen=True)
class RunListing:
    runs: list[RunSummary]
    next_cursor: str | None


def _position(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    try:
        return Position.decode(cursor)
    except BadCursor as exc:
        raise InvalidInput(str(exc), details={"cursor": [str(exc)]}) from exc


def list_runs(
    s: Session, filters: RunFilter, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> RunListing:
    """Runs newest first, one keyset page; ``cursor`` is a previous page's ``next_cursor``."""
    page = listings.run_page(s, filters, limit=limit, after=_position(cursor))
    return RunListing([RunSummary(run, intent) for run, intent in page.items], page.next_cursor)


@dataclass(frozen=True)
class IntentSummary:
    intent: Intent
    run: Run | None


@dataclass(frozen=True)
class IntentListing:
    intents: list[IntentSummary]
    next_cursor: str | None


def list_intents(
    s: Session,
    *,
    submitter: str | None = None,
    repo: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> IntentListing:
    """Intents newest first, one keyset page, each with its run if it was started."""
    page = listings.intent_page(
        s, submitter=submitter, repo=repo, limit=limit, after=_position(cursor)
    )
    return IntentListing([IntentSummary(i, r) for i, r in page.items], page.next_cursor)
