"""``/intents``: submit a goal against a repository, read it back, start its run."""

from __future__ import annotations

from shared.db.models import Intent, Run
from shared.db.repos.runs import IntentRepo
from shared.errors import Forbidden, NotFound
from shared.service.runs import pin_intent, record_intent, resolve_repo, start_run

from .auth import current_principal
from .openapi import Routes
from .responses import IntentOutSchema, StartedSchema
from .schemas import IntentIn, IntentSchema, StartRunIn, StartRunSchema
from .state import api


def _submitter(body: IntentIn) -> str:
    """Who submitted is the token's name; a body naming someone else is refused."""
    principal = current_principal()
    if body.submitted_by is not None and body.submitted_by != principal.name:
        raise Forbidden(f"you are authenticated as {principal.name!r}, not {body.submitted_by!r}")
    return principal.name


routes = Routes("intents", __name__, description="Submit intents and start their runs")


@routes.route("/intents", "POST")
@routes.arguments(IntentSchema())
@routes.response(201, IntentOutSchema())
@routes.errors(400, 413, 415, 422, 429)
def create_intent(body: IntentIn) -> Intent:
    """Store an intent pinned to its repository, base commit and policy.

    The repository must be a git work tree under KODO_REPO_ROOTS; a malformed
    ``.kodo/policy.toml`` at the trusted ref or at base_ref is refused (422).
    """
    ctx = api()
    repo = resolve_repo(body.repo, ctx.settings.repo_roots)
    submitter = _submitter(body)
    # git first, then the transaction: no pooled connection is held while git runs
    pinned = pin_intent(repo, base_ref=body.base_ref, policy_ref=ctx.settings.policy_ref or None)
    with ctx.uow() as uow:
        return record_intent(uow, pinned, goal=body.goal, submitted_by=submitter)


@routes.route("/intents/<kid:intent_id>", "GET")
@routes.response(200, IntentOutSchema())
@routes.errors(404)
def read_intent(intent_id: str) -> Intent:
    with api().sessions() as s:
        row = IntentRepo(s).get(intent_id)
        if row is None:
            raise NotFound(f"intent {intent_id} not found")
        return row


@routes.route("/intents/<kid:intent_id>/run", "POST")
@routes.arguments(StartRunSchema())
@routes.response(202, StartedSchema())
@routes.errors(400, 404, 409, 415)
def run_intent(_body: StartRunIn, intent_id: str) -> tuple[Run, int]:
    """Start the intent's single run; a repeat returns it without a second dispatch."""
    ctx = api()
    with ctx.uow() as uow:
        started = start_run(uow, intent_id, app_version=ctx.app_version, now=ctx.clock.now())
    return started.run, 202
