"""``/intents``: submit a goal against a repository, read it back, start its run."""

from __future__ import annotations

import re

from flask import request
from sqlalchemy.exc import IntegrityError

from shared.db.models import IDEMPOTENCY_KEY_PATTERN, Intent
from shared.db.repos.runs import IntentRepo
from shared.domain.budget import usd_to_micro
from shared.errors import Forbidden, InvalidInput, NotFound
from shared.service.runs import (
    Started,
    intent_request_sha256,
    pin_intent,
    record_intent,
    replayed_intent,
    resolve_repo,
    start_run,
)

from . import reads
from .auth import current_principal
from .openapi import Routes
from .responses import IntentListSchema, IntentOutSchema, StartedSchema
from .schemas import (
    IntentIn,
    IntentSchema,
    IntentsQuery,
    IntentsQuerySchema,
    StartRunIn,
    StartRunSchema,
)
from .state import api


def _submitter(body: IntentIn) -> str:
    """Who submitted is the token's name; a body naming someone else is refused."""
    principal = current_principal()
    if body.submitted_by is not None and body.submitted_by != principal.name:
        raise Forbidden(f"you are authenticated as {principal.name!r}, not {body.submitted_by!r}")
    return principal.name


routes = Routes("intents", __name__, description="Submit intents and start their runs")


IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def _idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` (1-200 printable ASCII characters), or None."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 200 printable ASCII characters without spaces",
            details={IDEMPOTENCY_KEY: ["not a valid key"]},
        )
    return key


@routes.route("/intents", "POST")
@routes.header(
    IDEMPOTENCY_KEY,
    description="Send the same request again with the same key (after a timeout or a 503)"
    " and get the intent the first one made (Idempotent-Replayed: true); the same key"
    " with another request is a 409 idempotency_key_reused. Keys are per token name.",
    pattern=IDEMPOTENCY_KEY_PATTERN,
)
@routes.arguments(IntentSchema())
@routes.response(201, IntentOutSchema())
@routes.errors(400, 409, 413, 415, 422, 429)
def create_intent(body: IntentIn) -> tuple[Intent, int, dict[str, str]]:
    """Store an intent pinned to its repository, base commit and policy.

    The repository must be a git work tree under KODO_REPO_ROOTS; a malformed
    ``.kodo/policy.toml`` at the trusted ref or at base_ref is refused (422). With an
    ``Idempotency-Key`` header (1-200 printable ASCII characters), sending the same
    request again (after a timeout or a 503) returns the intent the first one made,
    with ``Idempotent-Replayed: true``; the same key with another request is a 409.
    """
    ctx = api()
    repo = resolve_repo(body.repo, ctx.settings.repo_roots)
    submitter = _submitter(body)
    key = _idempotency_key()
    # git first, then the transaction: no pooled connection is held while git runs
    pinned = pin_intent(repo, base_ref=body.base_ref, policy_ref=ctx.settings.policy_ref or None)
    try:
        with ctx.uow() as uow:
            made = record_intent(
                uow,
                pinned,
                goal=body.goal,
                submitted_by=submitter,
                idempotency_key=key,
                budget=_budget(body),
            )
    except IntegrityError:
        if key is None:
            raise
        # the key was used before (a retry, or a racing twin): the insert is refused by
        # the unique index, so a first send pays no lookup
        earlier = _replayed(submitter, key, intent_request_sha256(pinned, body.goal))
        if earlier is None:
            raise
        return earlier, 201, {REPLAYED: "true"}
    return made, 201, {}


def _budget(body: IntentIn) -> tuple[int | None, int | None]:
    """The intent's budget: its own, else the operator's default (micro-dollars, tokens)."""
    settings = api().settings
    usd = body.budget_usd if body.budget_usd is not None else settings.budget_usd
    tokens = body.budget_tokens if body.budget_tokens is not None else settings.budget_tokens
    return (None if usd is None else usd_to_micro(usd)), tokens


def _replayed(submitter: str, key: str, request_sha256: str) -> Intent | None:
    with api().sessions() as s:
        return replayed_intent(
            s, submitted_by=submitter, idempotency_key=key, request_sha256=request_sha256
        )


@routes.route("/intents", "GET")
@routes.arguments(IntentsQuerySchema(), location="query")
@routes.response(200, IntentListSchema())
@routes.errors(400)
def list_intents(query: IntentsQuery) -> reads.IntentListing:
    """Intents newest first, a keyset page at a time, each with its run's status."""
    with api().sessions() as s:
        return reads.list_intents(
            s,
            submitter=query.submitter,
            repo=query.repo,
            limit=query.limit,
            cursor=query.cursor,
        )


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
def run_intent(_body: StartRunIn, intent_id: str) -> tuple[Started, int]:
    """Start the intent's single run; a repeat returns it without a second dispatch."""
    ctx = api()
    with ctx.uow() as uow:
        started = start_run(uow, intent_id, app_version=ctx.app_version, now=ctx.clock.now())
    return started, 202
