"""``/intents``: submit a goal against a repository, read it back, start its run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import request
from sqlalchemy.exc import IntegrityError

from shared.db.models import IDEMPOTENCY_KEY_PATTERN, Intent
from shared.db.repos.runs import IntentRepo, RunRepo
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
from shared.service.tokens import Permission
from shared.service.uow import UnitOfWork

from . import reads
from .auth import current_principal
from .openapi import Routes
from .responses import IntentListSchema, StartedSchema, SubmittedSchema
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


@dataclass(frozen=True)
class Submitted:
    """What ``POST /intents`` reports: the intent's fields, and its run if it started one."""

    intent: Intent
    run: Started | None

    def __getattr__(self, name: str) -> Any:  # the intent's own fields (IntentOutSchema)
        if name.startswith("__") or name in ("intent", "run"):  # copy, pickle: not the intent's
            raise AttributeError(name)
        return getattr(self.intent, name)


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
@routes.response(201, SubmittedSchema())
@routes.errors(400, 409, 413, 415, 422, 429)
def create_intent(body: IntentIn) -> tuple[Submitted, int, dict[str, str]]:
    """Store an intent pinned to its repository, base commit and policy; with
    ``run: true``, start its run in the same transaction (its first step leaves after
    the commit), as ``POST /intents/{id}/run`` would.

    The repository must be a git work tree under KODO_REPO_ROOTS; a malformed
    ``.kodo/policy.toml`` at the trusted ref or at base_ref is refused (422). With an
    ``Idempotency-Key`` header (1-200 printable ASCII characters), sending the same
    request again (after a timeout or a 503) returns the intent the first one made,
    with ``Idempotent-Replayed: true`` (and, if asked, its run, started now if that
    request did not); the same key with another request is a 409.
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
            started = _start(uow, made.id) if body.run else None
    except IntegrityError:
        if key is None:
            raise
        # the key was used before (a retry, or a racing twin): the insert is refused by
        # the unique index, so a first send pays no lookup
        earlier = _replayed(submitter, key, intent_request_sha256(pinned, body.goal))
        if earlier is None:
            raise
        return (
            Submitted(earlier, _run_of(earlier.id, start=body.run)),
            201,
            {REPLAYED: "true"},
        )
    return Submitted(made, started), 201, {}


def _start(uow: UnitOfWork, intent_id: str) -> Started:
    ctx = api()
    return start_run(uow, intent_id, app_version=ctx.app_version, now=ctx.clock.now())


def _run_of(intent_id: str, *, start: bool) -> Started | None:
    """A replayed submit's run as it stands (an ended one too); without one, started
    now if ``start`` (else None)."""
    with api().uow() as uow:
        status = uow.runs.status_of(intent_id)
        if status is not None:
            return Started(intent_id, status, created=False)
        return _start(uow, intent_id) if start else None


BUDGET_CEILING_RULE = "budget_ceiling"


def _budget(body: IntentIn) -> tuple[int | None, int | None]:
    """The intent's budget: its own, else the operator's default (micro-dollars, tokens).

    The operator's budget is a ceiling for a token that may not decide: raising a run's
    budget is an approver's decision (``POST /runs/{id}/budget``), and a submitter
    naming $1e9 at submit had started its run with the budget it could not have raised
    to (red-team helper-112). No operator budget: no ceiling."""
    settings = api().settings
    if not current_principal().may(Permission.DECIDE):
        over = [
            f"{name} {asked} (the operator's is {ceiling})"
            for name, asked, ceiling in (
                ("budgetUsd", body.budget_usd, settings.budget_usd),
                ("budgetTokens", body.budget_tokens, settings.budget_tokens),
            )
            if asked is not None and ceiling is not None and asked > ceiling
        ]
        if over:
            raise Forbidden(
                f"{BUDGET_CEILING_RULE}: a token that may not decide asks for no more than"
                f" the operator's budget: {'; '.join(over)}; an approver raises it"
            )
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
@routes.response(200, SubmittedSchema())
@routes.errors(404)
def read_intent(intent_id: str) -> Submitted:
    """The intent, with its run's status once it has one."""
    with api().sessions() as s:
        row = IntentRepo(s).get(intent_id)
        if row is None:
            raise NotFound(f"intent {intent_id} not found")
        status = RunRepo(s).status_of(intent_id)
        return Submitted(row, None if status is None else Started(intent_id, status, False))


@routes.route("/intents/<kid:intent_id>/run", "POST")
@routes.arguments(StartRunSchema())
@routes.response(202, StartedSchema())
@routes.errors(400, 404, 409, 415)
def run_intent(_body: StartRunIn, intent_id: str) -> tuple[Started, int]:
    """Start the intent's single run; a repeat returns it without a second dispatch.
    Only its submitter, or a token that may also decide (an admin), starts it (403
    ``intent_owner``)."""
    with api().uow() as uow:
        _assert_may_start(uow, intent_id)
        started = _start(uow, intent_id)
    return started, 202


INTENT_OWNER_RULE = "intent_owner"


def _assert_may_start(uow: UnitOfWork, intent_id: str) -> None:
    """Another submitter's token had started an intent drafted without ``run``, spending
    its budget: an admin's $500, past the ceiling that token's own intents are held to
    (red-team helper-131). Starting a run spends what its intent names: its submitter's
    call, or one of a token that may also raise a run's budget. An unknown intent is
    left to :func:`start_run` (404)."""
    principal = current_principal()
    if principal.may(Permission.DECIDE):
        return
    intent = uow.intents.get(intent_id)
    if intent is not None and intent.submitted_by != principal.name:
        raise Forbidden(
            f"{INTENT_OWNER_RULE}: intent {intent_id} was submitted by another principal;"
            " its submitter, or an admin, starts its run"
        )
