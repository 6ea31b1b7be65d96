"""Request bodies and query strings, loaded by marshmallow into frozen dataclasses.

``@arguments`` (services.api.parsing) feeds them the request; the OpenAPI spec
documents them from these same classes.

Validation stops here anything Postgres, git or the filesystem would fail on
(NUL characters, lone surrogates, over-long path components), so bad input is a 400,
never a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load
from marshmallow.validate import Length, Range, Regexp

from shared.db.repos.listings import RunFilter
from shared.domain.paging import DEFAULT_LIMIT, MAX_LIMIT
from shared.domain.rounds import COMMENT_MAX_CHARS
from shared.domain.run_machine import RunStatus, StepId

from .parsing import BodySchema


def clean_text(value: str) -> None:
    """Text Postgres and argv can carry: valid UTF-8, no NUL."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("must be valid UTF-8 text") from exc


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")


def short_path_parts(value: str) -> None:
    """Each component fits a filename (255 bytes), so path checks cannot raise ENAMETOOLONG."""
    if any(len(part.encode("utf-8", "replace")) > 255 for part in value.split("/")):
        raise ValidationError("a path component is longer than 255 bytes")


class _Strict(BodySchema):
    """A JSON body whose unknown fields are refused."""


class FullMatch(Regexp):
    """The whole value must match: Python checks ``re.fullmatch``, while the OpenAPI spec
    gets an ECMA-262 ``^...$`` pattern (``\\Z`` is Python-only and would make the spec
    invalid)."""

    def __init__(self, pattern: str, *, error: str) -> None:
        super().__init__(f"^(?:{pattern})$", error=error)
        self._full = re.compile(pattern)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self._full.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


BUDGET_USD_MAX = 1e9
BUDGET_TOKENS_MAX = 10**15
"""The largest budgets a request may set (micro-dollars and tokens fit a bigint)."""


@dataclass(frozen=True)
class IntentIn:
    repo: str
    goal: str
    base_ref: str
    submitted_by: str | None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    run: bool = False


class IntentSchema(_Strict):
    repo = fields.String(required=True, validate=[Length(1, 4096), clean_text, short_path_parts])
    goal = fields.String(required=True, validate=[Length(1, 4000), clean_text, not_blank])
    base_ref = fields.String(
        data_key="baseRef",
        load_default="HEAD",
        validate=[
            Length(1, 255),
            # no leading dash (git would read an option), no whitespace or control characters
            FullMatch(r"(?!-)[^\s\x00-\x1f\x7f]+", error="not a valid git ref"),
            clean_text,
        ],
    )
    submitted_by = fields.String(
        data_key="submittedBy",
        load_default=None,
        allow_none=True,
        validate=[Length(1, 255), clean_text],
    )
    budget_usd = fields.Float(
        data_key="budgetUsd",
        load_default=None,
        allow_none=True,
        allow_nan=False,
        validate=Range(0, BUDGET_USD_MAX),
        metadata={"description": "what the run may spend, USD (default: KODO_BUDGET_USD)"},
    )
    budget_tokens = fields.Integer(
        data_key="budgetTokens",
        load_default=None,
        allow_none=True,
        strict=True,
        validate=Range(0, BUDGET_TOKENS_MAX),
        metadata={"description": "what the run may spend, tokens (default: KODO_BUDGET_TOKENS)"},
    )
    run = fields.Boolean(
        load_default=False,
        metadata={
            "description": "start the intent's run in the same transaction: one request"
            " instead of this and POST /intents/{id}/run, and no intent is left without"
            " its run if the client goes away between them"
        },
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> IntentIn:
        return IntentIn(**data)


@dataclass(frozen=True)
class BudgetIn:
    budget_usd: float | None
    budget_tokens: int | None


class BudgetSchema(_Strict):
    """``POST /runs/{id}/budget``: the run's new limits (an omitted one stays as it is)."""

    budget_usd = fields.Float(
        data_key="budgetUsd",
        load_default=None,
        allow_none=True,
        allow_nan=False,
        validate=Range(0, BUDGET_USD_MAX),
    )
    budget_tokens = fields.Integer(
        data_key="budgetTokens",
        load_default=None,
        allow_none=True,
        strict=True,
        validate=Range(0, BUDGET_TOKENS_MAX),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> BudgetIn:
        if data["budget_usd"] is None and data["budget_tokens"] is None:
            raise ValidationError("name budgetUsd, budgetTokens or both", "_schema")
        return BudgetIn(**data)


@dataclass(frozen=True)
class StartRunIn:
    """No options yet; the empty schema still refuses unknown fields."""


class StartRunSchema(_Strict):
    body_required = False

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> StartRunIn:
        return StartRunIn()


@dataclass(frozen=True)
class NoOptionsIn:
    """A command without options (cancel); unknown fields are still refused."""


class NoOptionsSchema(_Strict):
    body_required = False

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> NoOptionsIn:
        return NoOptionsIn()


@dataclass(frozen=True)
class ChangesIn:
    approver: str | None
    plan_sha256: str
    comment: str


class ChangesSchema(_Strict):
    """``POST /runs/{id}/request-changes``: the comment is what the next plan must do,
    and ``planSha256`` the plan it was written about. The comment is quoted to the plan
    agent as the review of that plan: without the digest it was recorded on whatever
    plan was current when the request landed, a newer revision nobody read (red-team
    helper-103), so it is required, as an approval's is."""

    approver = fields.String(
        load_default=None, allow_none=True, validate=[Length(1, 255), clean_text]
    )
    plan_sha256 = fields.String(
        data_key="planSha256",
        required=True,
        validate=FullMatch(r"[0-9a-fA-F]{64}", error="must be 64 hex digits"),
        error_messages={
            "required": "send back the plan you read: give its planSha256 "
            "(GET /runs/{{id}}/plan returns it with the plan card)",
            "null": "send back the plan you read: give its planSha256",
        },
    )
    comment = fields.String(
        required=True, validate=[Length(1, COMMENT_MAX_CHARS), clean_text, not_blank]
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ChangesIn:
        return ChangesIn(
            approver=data["approver"],
            plan_sha256=data["plan_sha256"].lower(),
            comment=data["comment"],
        )


@dataclass(frozen=True)
class AnswerIn:
    approver: str | None
    question_sha256: str
    comment: str


class AnswerSchema(_Strict):
    """``POST /runs/{id}/answer``: the answer (``comment``) to the question whose digest
    ``questionSha256`` names (GET /runs/{id} serves both): an answer is never taken for
    a question asked after it was written."""

    approver = fields.String(
        load_default=None, allow_none=True, validate=[Length(1, 255), clean_text]
    )
    question_sha256 = fields.String(
        data_key="questionSha256",
        required=True,
        validate=FullMatch(r"[0-9a-fA-F]{64}", error="must be 64 hex digits"),
    )
    comment = fields.String(
        required=True, validate=[Length(1, COMMENT_MAX_CHARS), clean_text, not_blank]
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> AnswerIn:
        return AnswerIn(
            approver=data["approver"],
            question_sha256=data["question_sha256"].lower(),
            comment=data["comment"],
        )


@dataclass(frozen=True)
class DecisionIn:
    approver: str | None
    plan_sha256: str | None
    comment: str | None


class DecisionSchema(_Strict):
    body_required = False

    approver = fields.String(
        load_default=None, allow_none=True, validate=[Length(1, 255), clean_text]
    )
    plan_sha256 = fields.String(
        data_key="planSha256",
        load_default=None,
        allow_none=True,
        validate=FullMatch(r"[0-9a-fA-F]{64}", error="must be 64 hex digits"),
    )
    comment = fields.String(
        load_default=None, allow_none=True, validate=[Length(max=4000), clean_text]
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> DecisionIn:
        digest = data["plan_sha256"]
        return DecisionIn(
            approver=data["approver"],
            plan_sha256=digest.lower() if digest is not None else None,
            comment=data["comment"],
        )


class ApprovalSchema(DecisionSchema):
    """An approval names the plan it approves: the digest of the plan card the approver
    read. Without it, whatever plan is current when the request lands would be approved,
    a newer revision included, one nobody saw (a rejection needs no digest: refusing an
    unseen plan is safe)."""

    body_required = True

    plan_sha256 = fields.String(
        data_key="planSha256",
        required=True,
        validate=FullMatch(r"[0-9a-fA-F]{64}", error="must be 64 hex digits"),
        error_messages={
            "required": "approve the plan you read: give its planSha256 "
            "(GET /runs/{{id}}/plan returns it with the plan card)",
            "null": "approve the plan you read: give its planSha256",
        },
    )


@dataclass(frozen=True)
class ArtifactQuery:
    step: StepId | None


class ArtifactQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    step = fields.Enum(StepId, by_value=True, load_default=None)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ArtifactQuery:
        return ArtifactQuery(step=data["step"])


class _ListQuery(Schema):
    """A list's query string: filters, page size and the previous page's cursor."""

    class Meta:
        unknown = EXCLUDE

    submitter = fields.String(
        load_default=None, validate=[Length(1, 255), clean_text], metadata={"description": "exact"}
    )
    repo = fields.String(
        load_default=None,
        validate=[Length(1, 4096), clean_text],
        metadata={"description": "the repository's path as submitted (exact)"},
    )
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=Range(1, MAX_LIMIT),
        metadata={"description": f"page size (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})"},
    )
    cursor = fields.String(
        load_default=None,
        validate=Length(1, 400),
        metadata={"description": "nextCursor of the previous page"},
    )


@dataclass(frozen=True)
class RunsQuery:
    filters: RunFilter
    limit: int
    cursor: str | None


class RunsQuerySchema(_ListQuery):
    status = fields.Enum(
        RunStatus, by_value=True, load_default=None, metadata={"description": "one run status"}
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> RunsQuery:
        status = data["status"]
        filters = RunFilter(
            status=status.value if status is not None else None,
            submitter=data["submitter"],
            repo=data["repo"],
        )
        return RunsQuery(filters, data["limit"], data["cursor"])


@dataclass(frozen=True)
class IntentsQuery:
    submitter: str | None
    repo: str | None
    limit: int
    cursor: str | None


class IntentsQuerySchema(_ListQuery):
    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> IntentsQuery:
        return IntentsQuery(data["submitter"], data["repo"], data["limit"], data["cursor"])
