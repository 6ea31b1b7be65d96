"""``/runs/<id>``: a run's status and the human decision on its plan."""

from __future__ import annotations

from shared.db.models import Run
from shared.db.repos.approvals import Decided
from shared.domain.budget import usd_to_micro
from shared.errors import Forbidden
from shared.service import runs as commands

from . import reads
from .auth import current_principal
from .openapi import Routes
from .responses import (
    AnsweredSchema,
    ApprovedSchema,
    BudgetedSchema,
    ChangesRequestedSchema,
    RejectedSchema,
    RetriedSchema,
    RunListSchema,
    RunOutSchema,
    StartedSchema,
)
from .schemas import (
    AnswerIn,
    AnswerSchema,
    ApprovalSchema,
    BudgetIn,
    BudgetSchema,
    ChangesIn,
    ChangesSchema,
    DecisionIn,
    DecisionSchema,
    NoOptionsIn,
    NoOptionsSchema,
    RunsQuery,
    RunsQuerySchema,
)
from .state import api

routes = Routes("runs", __name__, description="Runs and the decision on their plan")


def _approver(body: DecisionIn | ChangesIn | AnswerIn) -> str:
    """Who decided is the token's name; a body naming someone else is refused."""
    principal = current_principal()
    if body.approver is not None and body.approver != principal.name:
        raise Forbidden(
            f"you are authenticated as {principal.name!r}, not {body.approver!r}",
            details={"approver": [principal.name]},
        )
    return principal.name


@routes.route("/runs", "GET")
@routes.arguments(RunsQuerySchema(), location="query")
@routes.response(200, RunListSchema())
@routes.errors(400)
def list_runs(query: RunsQuery) -> reads.RunListing:
    """Runs newest first, a keyset page at a time, filtered by status, submitter, repo."""
    with api().sessions() as s:
        return reads.list_runs(s, query.filters, limit=query.limit, cursor=query.cursor)


@routes.route("/runs/<kid:run_id>", "GET")
@routes.response(200, RunOutSchema())
@routes.errors(404)
def read_run(run_id: str) -> reads.RunView:
    with api().sessions() as s:
        return reads.run_with_steps(s, run_id)


@routes.route("/runs/<kid:run_id>/approve-plan", "POST")
@routes.arguments(ApprovalSchema())
@routes.response(200, ApprovedSchema())
@routes.errors(400, 404, 409, 415)
def approve_plan(body: DecisionIn, run_id: str) -> Decided:
    """Record the approval and, in the same transaction, move the run to ``applying``;
    ApplyPatchST is sent after commit (a message Redis lost is re-sent by the reconciler;
    the beat watcher dispatches approvals recorded without this). ``planSha256`` is
    required: the digest of the plan card the approver read (400 without it). 409 unless
    the run waits for approval, or if ``planSha256`` is not the current plan's; 403 if
    the approver submitted the run (unless the operator set ``KODO_ALLOW_SELF_APPROVAL=1``).
    """
    ctx = api()
    with ctx.uow() as uow:
        return commands.approve_plan(
            uow,
            run_id,
            approver=_approver(body),
            now=ctx.clock.now(),
            plan_sha256=body.plan_sha256,
            comment=body.comment,
            allow_self_approval=ctx.settings.allow_self_approval,
        )


@routes.route("/runs/<kid:run_id>/reject-plan", "POST")
@routes.arguments(DecisionSchema())
@routes.response(200, RejectedSchema())
@routes.errors(400, 404, 409, 415)
def reject_plan(body: DecisionIn, run_id: str) -> Decided:
    """Reject the plan; the run ends as ``rejected`` in the same transaction."""
    ctx = api()
    with ctx.uow() as uow:
        return commands.reject_plan(
            uow,
            run_id,
            approver=_approver(body),
            now=ctx.clock.now(),
            plan_sha256=body.plan_sha256,
            comment=body.comment,
        )


@routes.route("/runs/<kid:run_id>/request-changes", "POST")
@routes.arguments(ChangesSchema())
@routes.response(200, ChangesRequestedSchema())
@routes.errors(400, 404, 409, 415)
def request_changes(body: ChangesIn, run_id: str) -> commands.Revising:
    """Send the plan back to CompileST with the comment; the run is ``compiling`` its next
    revision when this answers, and CompileST is sent after commit. The earlier plan can
    no longer be approved. 409 unless the run waits for approval, if ``plan_sha256`` is
    not the current plan's, or past ``KODO_MAX_REVISIONS`` plans (rule revision_limit).
    A repeated request on the same plan is accepted again and starts nothing.
    """
    ctx = api()
    with ctx.uow() as uow:
        return commands.request_changes(
            uow,
            run_id,
            approver=_approver(body),
            comment=body.comment,
            now=ctx.clock.now(),
            max_revisions=ctx.settings.max_revisions,
            lease_s=ctx.settings.redispatch_after_s,
            plan_sha256=body.plan_sha256,
        )


@routes.route("/runs/<kid:run_id>/answer", "POST")
@routes.arguments(AnswerSchema())
@routes.response(200, AnsweredSchema())
@routes.errors(400, 404, 409, 415)
def answer(body: AnswerIn, run_id: str) -> commands.Answering:
    """Answer the question DecideST escalated (``comment`` is the answer, to the question
    ``questionSha256`` names); DecideST decides again with it, sent after commit. 409
    unless ``nextAction`` is ``await:answer``, or if another question waits by now (rule
    ``question_superseded``).
    """
    ctx = api()
    with ctx.uow() as uow:
        return commands.answer_question(
            uow,
            run_id,
            approver=_approver(body),
            answer=body.comment,
            now=ctx.clock.now(),
            lease_s=ctx.settings.redispatch_after_s,
            question_sha256=body.question_sha256,
        )


@routes.route("/runs/<kid:run_id>/budget", "POST")
@routes.arguments(BudgetSchema())
@routes.response(200, BudgetedSchema())
@routes.errors(400, 404, 409, 415)
def set_budget(body: BudgetIn, run_id: str) -> commands.Budgeted:
    """Set the run's budget (``budget_usd``, ``budget_tokens``; an omitted one stays).
    A run waiting at ``await:budget`` resumes its step if the next call now fits (409 if
    it still would not). 409 for an ended run.
    """
    ctx = api()
    settings = ctx.settings
    with ctx.uow() as uow:
        return commands.set_budget(
            uow,
            run_id,
            approver=current_principal().name,
            usd_micro=None if body.budget_usd is None else usd_to_micro(body.budget_usd),
            tokens=body.budget_tokens,
            estimate=settings.call_estimate(),
            now=ctx.clock.now(),
            lease_s=settings.redispatch_after_s,
        )


@routes.route("/runs/<kid:run_id>/retry", "POST")
@routes.arguments(NoOptionsSchema())
@routes.response(200, RetriedSchema())
@routes.errors(400, 404, 409, 415)
def retry(_: NoOptionsIn, run_id: str) -> commands.Retrying:
    """Resume a ``failed`` run at the step that failed it (an admin's call), under that
    step's next attempt numbers: nothing paid for before is paid again. ``retryCount``
    counts it. 409 unless the run failed (a run's one way to go again after a failure:
    one run per intent).
    """
    ctx = api()
    with ctx.uow() as uow:
        return commands.retry_run(
            uow,
            run_id,
            operator=current_principal().name,
            now=ctx.clock.now(),
            lease_s=ctx.settings.redispatch_after_s,
        )


@routes.route("/runs/<kid:run_id>/cancel", "POST")
@routes.arguments(NoOptionsSchema())
@routes.response(200, StartedSchema())
@routes.errors(400, 404, 409, 415)
def cancel(_: NoOptionsIn, run_id: str) -> Run:
    """Cancel the run from any active state (idempotent); 409 if it already ended otherwise.

    The step in flight stops before its next provider call; its open call is aborted
    by a worker, asked after commit.
    """
    ctx = api()
    with ctx.uow() as uow:
        run, _changed = commands.cancel_run(uow, run_id, now=ctx.clock.now())
    return run
