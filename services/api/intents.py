"""``/intents``: submit a goal against a repository, read it back, start its run."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from shared.db.engine import unit_of_work
from shared.db.repos.runs import IntentRepo
from shared.errors import NotFound
from shared.queue import send_step
from shared.service.runs import resolve_repo, start_run, submit_intent

from . import render
from .schemas import IntentIn, IntentSchema, StartRunIn, StartRunSchema, parse_body
from .state import api

bp = Blueprint("intents", __name__)


@bp.post("/intents")
def create_intent() -> ResponseReturnValue:
    body = parse_body(IntentSchema(), IntentIn)
    ctx = api()
    repo = resolve_repo(body.repo, ctx.settings.repo_roots)
    with unit_of_work(ctx.sessions) as s:
        row = submit_intent(
            s, repo=repo, goal=body.goal, base_ref=body.base_ref, submitted_by=body.submitted_by
        )
        created = render.intent(row)  # created_at is a server default: read it in the session
    return created, 201


@bp.get("/intents/<kid:intent_id>")
def read_intent(intent_id: str) -> ResponseReturnValue:
    with api().sessions() as s:
        row = IntentRepo(s).get(intent_id)
        if row is None:
            raise NotFound(f"intent {intent_id} not found")
        return render.intent(row)


@bp.post("/intents/<kid:intent_id>/run")
def run_intent(intent_id: str) -> ResponseReturnValue:
    """Start the intent's single run; a repeat returns it without a second dispatch."""
    parse_body(StartRunSchema(), StartRunIn, required=False)
    ctx = api()
    with unit_of_work(ctx.sessions) as s:
        started = start_run(s, intent_id, app_version=ctx.app_version, now=ctx.clock.now())
    if started.dispatch is not None:
        send_step(ctx.celery, started.dispatch, started.run.id)
    return {"runId": started.run.id, "status": started.run.status}, 202
