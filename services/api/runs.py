"""``/runs/<id>``: a run's status and the human decision on its plan."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from shared.db.engine import unit_of_work
from shared.queue import nudge_watcher
from shared.service.runs import decide_plan

from . import reads, render
from .schemas import DecisionIn, DecisionSchema, parse_body
from .state import api

bp = Blueprint("runs", __name__)


@bp.get("/runs/<kid:run_id>")
def read_run(run_id: str) -> ResponseReturnValue:
    with api().sessions() as s:
        run, steps = reads.run_with_steps(s, run_id)
        return render.run(run, steps)


@bp.post("/runs/<kid:run_id>/approve-plan")
def approve_plan(run_id: str) -> ResponseReturnValue:
    """Record the approval; the watcher (nudged after commit) moves the run on."""
    body = parse_body(DecisionSchema(), DecisionIn, required=False)
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
    return {
        "accepted": True,
        "runId": row.run_id,
        "planSha256": row.plan_sha256,
        "approver": row.approver,
        "approvedAt": render.iso(row.approved_at),
    }


@bp.post("/runs/<kid:run_id>/reject-plan")
def reject_plan(run_id: str) -> ResponseReturnValue:
    """Reject the plan; the run ends as ``rejected`` in the same transaction."""
    body = parse_body(DecisionSchema(), DecisionIn, required=False)
    ctx = api()
    with unit_of_work(ctx.sessions) as s:
        row = decide_plan(
            s,
            run_id,
            approve=False,
            approver=body.approver,
            now=ctx.clock.now(),
            plan_sha256=body.plan_sha256,
            comment=body.comment,
        )
    return {"accepted": True, "runId": row.run_id, "status": row.decision}
