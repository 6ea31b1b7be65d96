"""``/runs/<id>``: a run's status and the human decision on its plan."""

from __future__ import annotations

from shared.db.engine import unit_of_work
from shared.db.models import PlanApproval
from shared.queue import nudge_watcher
from shared.service.runs import decide_plan

from . import reads
from .openapi import Routes
from .responses import ApprovedSchema, RejectedSchema, RunOutSchema
from .schemas import DecisionIn, DecisionSchema
from .state import api

routes = Routes("runs", __name__, description="Runs and the decision on their plan")


@routes.route("/runs/<kid:run_id>", "GET")
@routes.response(200, RunOutSchema())
@routes.errors(404)
def read_run(run_id: str) -> reads.RunView:
    with api().sessions() as s:
        return reads.run_with_steps(s, run_id)


@routes.route("/runs/<kid:run_id>/approve-plan", "POST")
@routes.arguments(DecisionSchema())
@routes.response(200, ApprovedSchema())
@routes.errors(400, 404, 409, 415)
def approve_plan(body: DecisionIn, run_id: str) -> PlanApproval:
    """Record the approval; the watcher (nudged after commit) moves the run on.

    409 unless the run waits for approval, or if ``plan_sha256`` is not the current plan's.
    """
    ctx = api()
    with unit_of_work(ctx.sessions) as s:
        row = decide_plan(
            s,
            run_id,
            approve=True,
            approver=body.approver,
            now=ctx.clock.now(),
            plan_sha256=body.plan_sha256,
            comment=body.comment,
        )
    nudge_watcher(ctx.celery)
    return row


@routes.route("/runs/<kid:run_id>/reject-plan", "POST")
@routes.arguments(DecisionSchema())
@routes.response(200, RejectedSchema())
@routes.errors(400, 404, 409, 415)
def reject_plan(body: DecisionIn, run_id: str) -> PlanApproval:
    """Reject the plan; the run ends as ``rejected`` in the same transaction."""
    ctx = api()
    with unit_of_work(ctx.sessions) as s:
        return decide_plan(
            s,
            run_id,
            approve=False,
            approver=body.approver,
            now=ctx.clock.now(),
            plan_sha256=body.plan_sha256,
            comment=body.comment,
        )
