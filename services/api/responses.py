"""The API's response shapes, as marshmallow schemas that dump rows and read models.

The same classes render every response (``@response`` dumps the view's return value)
and document it in the OpenAPI spec, so the spec cannot drift from what is sent.
Field order is the documented order (the JSON provider does not sort keys).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from shared.domain.budget import micro_to_usd

ISO = "iso"  # datetime.isoformat(), offset included


def camel_keys(value: dict[str, Any]) -> dict[str, Any]:
    """A stored JSON object's keys as the API spells keys (``total_tokens`` -> ``totalTokens``)."""
    return {_camel(k): v for k, v in value.items()}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _dt(data_key: str, attribute: str | None = None) -> fields.DateTime:
    return fields.DateTime(format=ISO, data_key=data_key, attribute=attribute, allow_none=True)


class ErrorBodySchema(Schema):
    code = fields.String(metadata={"description": "stable, machine-readable error code"})
    message = fields.String(metadata={"description": "what went wrong, for a human"})
    details = fields.Dict(metadata={"description": "per-field messages or other context"})


class ErrorSchema(Schema):
    """Every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorBodySchema)


class IntentOutSchema(Schema):
    intent_id = fields.String(data_key="intentId", attribute="id")
    repo = fields.String(attribute="repo_path")
    goal = fields.String()
    base_ref = fields.String(data_key="baseRef")
    base_commit = fields.String(
        data_key="baseCommit",
        allow_none=True,
        metadata={"description": "the commit baseRef named at submit (the run starts there)"},
    )
    submitted_by = fields.String(data_key="submittedBy", allow_none=True)
    created_at = _dt("createdAt")


class StartedSchema(Schema):
    """The started run, as ``POST /intents/<id>/run`` reports it."""

    run_id = fields.String(data_key="runId", attribute="id")
    status = fields.String()


class SubmittedSchema(IntentOutSchema):
    """The intent ``POST /intents`` made, with its run when the request asked to start it."""

    run = fields.Nested(
        StartedSchema,
        allow_none=True,
        metadata={
            "description": "the intent's run once started (``run: true`` starts it with"
            " the intent), else null"
        },
    )


class StepOutSchema(Schema):
    step_id = fields.String(data_key="stepId")
    status = fields.String()
    round = fields.Integer(
        metadata={"description": "1, then one more per plan revision or retry of the step"}
    )
    deliveries = fields.Integer()
    duration_ms = fields.Integer(data_key="durationMs", allow_none=True)
    started_at = _dt("startedAt")
    finished_at = _dt("finishedAt")
    error = fields.String(allow_none=True)


class RunOutSchema(Schema):
    """A ``reads.RunView``: the run row and its step checkpoints."""

    run_id = fields.String(data_key="runId", attribute="run.id")
    intent_id = fields.String(data_key="intentId", attribute="run.intent_id")
    status = fields.String(attribute="run.status")
    last_step = fields.String(data_key="lastStep", attribute="run.last_step", allow_none=True)
    retry_count = fields.Integer(data_key="retryCount", attribute="run.retry_count")
    next_action = fields.String(data_key="nextAction", attribute="run.next_action")
    app_version = fields.String(data_key="appVersion", attribute="run.app_version")
    contract_version = fields.String(
        data_key="contractVersion", attribute="run.contract_version", allow_none=True
    )
    plan_sha256 = fields.String(data_key="planSha256", attribute="run.plan_sha256", allow_none=True)
    branch = fields.String(attribute="run.branch", allow_none=True)
    error = fields.String(attribute="run.error", allow_none=True)
    created_at = _dt("createdAt", attribute="run.created_at")
    updated_at = _dt("updatedAt", attribute="run.updated_at")
    finished_at = _dt("finishedAt", attribute="run.finished_at")
    question = fields.String(
        allow_none=True,
        metadata={"description": "DecideST's question while nextAction is await:answer"},
    )
    question_sha256 = fields.String(
        data_key="questionSha256",
        allow_none=True,
        metadata={
            "description": "the question's digest: POST /runs/{id}/answer names it (409"
            " question_superseded if another question waits by then)"
        },
    )
    delivered_sha = fields.String(
        data_key="deliveredSha",
        attribute="run.delivered_sha",
        allow_none=True,
        metadata={"description": "the commit pushed to the delivery remote (KODO_DELIVER_REMOTE)"},
    )
    delivered_at = _dt("deliveredAt", attribute="run.delivered_at")
    delivery_error = fields.String(
        data_key="deliveryError", attribute="run.delivery_error", allow_none=True
    )
    budget = fields.Dict(
        metadata={
            "description": "usd and tokens: limit (null: none), spent (settled calls),"
            " reserved (calls in flight) and remaining"
        }
    )
    steps = fields.List(fields.Nested(StepOutSchema))


class ApprovalOutSchema(Schema):
    decision = fields.String()
    approver = fields.String()
    approved_at = _dt("approvedAt")


class PlanOutSchema(Schema):
    """A ``reads.PlanView``: the plan card as CompileST stored it, and its digest."""

    run_id = fields.String(data_key="runId")
    plan_sha256 = fields.String(data_key="planSha256", allow_none=True)
    plan = fields.Raw(metadata={"description": "the plan card (design, files, risks, tests)"})
    approval = fields.Nested(ApprovalOutSchema, allow_none=True)


class DecisionOutSchema(Schema):
    """A human decision on one plan digest: approved, rejected or changes_requested."""

    decision = fields.String()
    approver = fields.String()
    comment = fields.String(allow_none=True)
    decided_at = _dt("decidedAt")


class RevisionOutSchema(Schema):
    """A ``reads.Revision``: one plan the run has had."""

    revision = fields.Integer(
        metadata={"description": "1 for the first plan, N for CompileST's round N"}
    )
    plan_sha256 = fields.String(data_key="planSha256", attribute="artifact.sha256")
    artifact = fields.String(attribute="artifact.name")
    created_at = _dt("createdAt", attribute="artifact.created_at")
    plan = fields.Raw(metadata={"description": "the plan card (design, files, risks, tests)"})
    decision = fields.Nested(DecisionOutSchema, allow_none=True)


class RevisionsSchema(Schema):
    """A ``reads.RevisionsView``: every plan of the run, oldest first."""

    run_id = fields.String(data_key="runId", attribute="run.id")
    status = fields.String(attribute="run.status")
    current_plan_sha256 = fields.String(
        data_key="currentPlanSha256", attribute="run.plan_sha256", allow_none=True
    )
    max_revisions = fields.Integer(data_key="maxRevisions")
    revisions = fields.List(fields.Nested(RevisionOutSchema))


class ChangesRequestedSchema(Schema):
    """A ``shared.service.runs.Revising``: the request recorded, the revision compiling."""

    accepted = fields.Constant(True)
    run_id = fields.String(data_key="runId", attribute="decision.run_id")
    status = fields.String(attribute="decision.decision")
    plan_sha256 = fields.String(data_key="planSha256", attribute="decision.plan_sha256")
    approver = fields.String(attribute="decision.approver")
    comment = fields.String(attribute="decision.comment")
    revision = fields.Integer(metadata={"description": "the plan revision now compiling"})


class RetriedSchema(Schema):
    """A ``shared.service.runs.Retrying``: the run running again, and where."""

    accepted = fields.Constant(True)
    run_id = fields.String(data_key="runId", attribute="run.id")
    status = fields.String(attribute="run.status")
    step_id = fields.String(data_key="stepId", attribute="step")
    round = fields.Integer(metadata={"description": "the step's round: 2 for its first retry"})
    retry_count = fields.Integer(data_key="retryCount", attribute="run.retry_count")


class BudgetedSchema(Schema):
    """A ``shared.service.runs.Budgeted``: the run's budget now, and the step it resumed."""

    run_id = fields.String(data_key="runId", attribute="run.id")
    status = fields.String(attribute="run.status")
    resumed = fields.String(allow_none=True, metadata={"description": "the step resumed"})
    budget = fields.Method("_budget")

    def _budget(self, budgeted: object) -> dict[str, Any]:
        found = getattr(budgeted, "budget", None)
        return found.to_json() if found is not None else {}


class AnsweredSchema(Schema):
    """A ``shared.service.runs.Answering``: the answer recorded, the run deciding again."""

    accepted = fields.Constant(True)
    run_id = fields.String(data_key="runId", attribute="run.id")
    status = fields.String(attribute="run.status")
    question = fields.String()
    answer = fields.String()
    answered_by = fields.String(data_key="answeredBy")


class ApprovedSchema(Schema):
    """The recorded approval (a repeat returns the first record)."""

    accepted = fields.Constant(True)
    run_id = fields.String(data_key="runId")
    plan_sha256 = fields.String(data_key="planSha256")
    approver = fields.String()
    approved_at = _dt("approvedAt")


class RejectedSchema(Schema):
    accepted = fields.Constant(True)
    run_id = fields.String(data_key="runId")
    status = fields.String(attribute="decision")
    approver = fields.String()


class CallOutSchema(Schema):
    """A ledger row without its request and response bodies (those can be large)."""

    op_key = fields.String(data_key="opKey")
    step_id = fields.String(data_key="stepId")
    attempt = fields.Integer()
    agent = fields.String()
    session_id = fields.String(data_key="sessionId", allow_none=True)
    status = fields.String()
    duration_ms = fields.Integer(data_key="durationMs", allow_none=True)
    usage = fields.Method(
        "_usage",
        allow_none=True,
        metadata={
            "type": "object",
            "description": "totalTokens, inputTokens, outputTokens, reasoningTokens,"
            " cacheReadTokens, cacheWriteTokens, costUsd (the ledger's usage, camelCase)",
        },
    )
    spent_usd = fields.Method(
        "_spent_usd",
        data_key="spentUsd",
        allow_none=True,
        metadata={
            "description": "what the call spent of its run's budget once settled (null"
            " before): its usage, or at least its reservation for a turn cut short"
        },
    )
    spent_tokens = fields.Integer(data_key="spentTokens", allow_none=True)
    error = fields.String(allow_none=True)
    created_at = _dt("createdAt")
    finished_at = _dt("finishedAt")

    def _spent_usd(self, call: object) -> float | None:
        micro = getattr(call, "spent_usd_micro", None)
        return micro_to_usd(micro) if isinstance(micro, int) else None

    def _usage(self, call: object) -> dict[str, Any] | None:
        usage = getattr(call, "usage", None)
        return camel_keys(usage) if isinstance(usage, dict) else None


class CallsSchema(Schema):
    run_id = fields.String(data_key="runId")
    calls = fields.List(fields.Nested(CallOutSchema))


class ArtifactOutSchema(Schema):
    id = fields.Integer()
    step_id = fields.String(data_key="stepId")
    kind = fields.String()
    name = fields.String()
    media_type = fields.String(data_key="mediaType")
    sha256 = fields.String()
    size = fields.Integer()
    created_at = _dt("createdAt")


class HealthSchema(Schema):
    ok = fields.Boolean()
    database = fields.String(metadata={"description": '"ok" or "failed: <reason>"'})
    redis = fields.String(metadata={"description": '"ok" or "failed: <reason>"'})
    failed = fields.List(fields.String(), metadata={"description": "only when something failed"})


class RunSummarySchema(Schema):
    """A ``reads.RunSummary``: a run as a list shows it."""

    run_id = fields.String(data_key="runId", attribute="run.id")
    intent_id = fields.String(data_key="intentId", attribute="run.intent_id")
    status = fields.String(attribute="run.status")
    next_action = fields.String(data_key="nextAction", attribute="run.next_action")
    last_step = fields.String(data_key="lastStep", attribute="run.last_step", allow_none=True)
    goal = fields.String(attribute="intent.goal")
    repo = fields.String(attribute="intent.repo_path")
    base_ref = fields.String(data_key="baseRef", attribute="intent.base_ref")
    base_commit = fields.String(
        data_key="baseCommit", attribute="intent.base_commit", allow_none=True
    )
    submitted_by = fields.String(
        data_key="submittedBy", attribute="intent.submitted_by", allow_none=True
    )
    plan_sha256 = fields.String(data_key="planSha256", attribute="run.plan_sha256", allow_none=True)
    cost_usd = fields.Float(
        data_key="costUsd", metadata={"description": "settled spend so far, USD"}
    )
    tokens = fields.Integer(metadata={"description": "settled tokens so far"})
    created_at = _dt("createdAt", attribute="run.created_at")
    updated_at = _dt("updatedAt", attribute="run.updated_at")
    finished_at = _dt("finishedAt", attribute="run.finished_at")


class RunListSchema(Schema):
    """A ``reads.RunListing``: newest first; pass ``nextCursor`` as ``cursor`` for more."""

    runs = fields.List(fields.Nested(RunSummarySchema))
    next_cursor = fields.String(
        data_key="nextCursor", allow_none=True, metadata={"description": "null: the last page"}
    )


class IntentSummarySchema(Schema):
    """A ``reads.IntentSummary``: the intent and, once started, its run's status."""

    intent_id = fields.String(data_key="intentId", attribute="intent.id")
    repo = fields.String(attribute="intent.repo_path")
    goal = fields.String(attribute="intent.goal")
    base_ref = fields.String(data_key="baseRef", attribute="intent.base_ref")
    base_commit = fields.String(
        data_key="baseCommit", attribute="intent.base_commit", allow_none=True
    )
    submitted_by = fields.String(
        data_key="submittedBy", attribute="intent.submitted_by", allow_none=True
    )
    created_at = _dt("createdAt", attribute="intent.created_at")
    run_status = fields.Method(
        "_run_status",
        data_key="runStatus",
        allow_none=True,
        metadata={"type": "string", "description": "null until the intent's run is started"},
    )

    def _run_status(self, summary: object) -> str | None:
        status = getattr(getattr(summary, "run", None), "status", None)
        return status if isinstance(status, str) else None


class IntentListSchema(Schema):
    intents = fields.List(fields.Nested(IntentSummarySchema))
    next_cursor = fields.String(data_key="nextCursor", allow_none=True)
