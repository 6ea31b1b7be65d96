"""The tables, in Postgres schema ``app``. Constraints do the guarding.

Status columns are checked by the database; the op_key ledger is UNIQUE; every
row hangs off a run by foreign key.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    BindParameter,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.domain.run_machine import RunStatus, StepId
from shared.domain.vocab import ArtifactKind, CallStatus, Decision, StepRunStatus, values
from shared.domain.webhooks import AttemptOutcome, DeliveryStatus, WebhookEvent

SCHEMA = "app"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CALL_STATUSES = values(CallStatus)
STEP_RUN_STATUSES = values(StepRunStatus)
DECISIONS = values(Decision)
ARTIFACT_KINDS = values(ArtifactKind)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


RUN_STATUS_VALUES = values(RunStatus)
STEP_ID_VALUES = values(StepId)


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        # None is SQL NULL (not JSON null), so ``WHERE response IS NULL`` tells the truth.
        dict[str, Any]: JSONB(none_as_null=True),
        datetime: DateTime(timezone=True),
    }


IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,200}$"
"""An Idempotency-Key: 1 to 200 printable ASCII characters, no spaces."""


class Intent(Base):
    __tablename__ = "intents"
    __table_args__ = (
        CheckConstraint(
            f"idempotency_key ~ '{IDEMPOTENCY_KEY_PATTERN}'", name="idempotency_key_printable"
        ),
        CheckConstraint(
            "coalesce(budget_usd_micro, 0) >= 0 AND coalesce(budget_tokens, 0) >= 0",
            name="budget",
        ),
        # GET /intents pages newest first by (created_at, id) (migration 0018).
        Index("ix_intents_created", "created_at", "id"),
        # A client's retry of POST /intents with its Idempotency-Key finds the first one.
        Index(
            "ix_intents_submitter_idempotency_key",
            "submitted_by",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo_path: Mapped[str] = mapped_column(Text)
    goal: Mapped[str] = mapped_column(Text)
    base_ref: Mapped[str] = mapped_column(String(255))
    submitted_by: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Pinned at submit (migration 0007): the commit base_ref named then, the repository's
    # identity, and the policy from the trusted ref combined with base_ref's.
    base_commit: Mapped[str | None] = mapped_column(String(64))
    repo_device: Mapped[int | None] = mapped_column(BigInteger)
    repo_inode: Mapped[int | None] = mapped_column(BigInteger)
    policy: Mapped[dict[str, Any] | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # migration 0014
    # Migration 0016: what the intent's run may spend (NULL: no budget in that dimension).
    budget_usd_micro: Mapped[int | None] = mapped_column(BigInteger)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)


class Run(Base):
    """A workflow; its id is its intent's id (workflow id == intent id)."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUS_VALUES), name="status"),
        CheckConstraint(
            f"last_step IS NULL OR {_in('last_step', STEP_ID_VALUES)}", name="last_step"
        ),
        CheckConstraint("id = intent_id", name="workflow_id_is_intent_id"),
        CheckConstraint("retry_count >= 0", name="retry_count"),
        # GET /runs pages newest first by (created_at, id), by status too (migration 0018).
        Index("ix_runs_created", "created_at", "id"),
        Index("ix_runs_status_created", "status", "created_at", "id"),
        # Migration 0024: the reconciler's cleanup reads only runs with a worktree left.
        Index(
            "ix_runs_cleanup_due",
            text("cleanup_failed_at NULLS FIRST"),
            "finished_at",
            postgresql_where=text("worktree_removed_at IS NULL AND worktree_path IS NOT NULL"),
        ),
        # Migration 0026: the reconciler's release reads only runs with an instance open.
        Index(
            "ix_runs_instances_open",
            "updated_at",
            postgresql_where=text("instances_opened_at IS NOT NULL"),
        ),
        CheckConstraint(
            "coalesce(budget_usd_micro, 0) >= 0 AND coalesce(budget_tokens, 0) >= 0"
            " AND spent_usd_micro >= 0 AND spent_tokens >= 0"
            " AND reserved_usd_micro >= 0 AND reserved_tokens >= 0",
            name="budget",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    intent_id: Mapped[str] = mapped_column(
        ForeignKey("intents.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(32))
    last_step: Mapped[str | None] = mapped_column(String(32))
    # Every time kodo tried something again for this run: each provider attempt after a
    # step's first (a ledger row with attempt > 1) plus each delivery of a step after its
    # first (step_runs.deliveries - 1: a Celery retry, a broker redelivery, a reconciler
    # re-dispatch). Written by the statement that claims the attempt or enters the step.
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    next_action: Mapped[str] = mapped_column(String(64))
    app_version: Mapped[str] = mapped_column(String(64))
    # The step contract the run was started under (shared.domain.step_contract); NULL for
    # runs started before migration 0011 (the first step to enter records its own).
    contract_version: Mapped[str | None] = mapped_column(String(64))
    plan_sha256: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(255))
    worktree_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    # Migration 0019: one more per change of status, last_step or next_action, counted by
    # a trigger (SSE ids: a client resumes from the last one it saw).
    event_seq: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    # Migration 0016: the budget (NULL: none), what settled calls spent, what calls in
    # flight hold reserved; micro-dollars and tokens. Settled by app.settle_call.
    budget_usd_micro: Mapped[int | None] = mapped_column(BigInteger)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    spent_usd_micro: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_usd_micro: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Migration 0017: the succeeded run's branch pushed to its delivery remote, and the
    # reconciler's cleanup of finished runs.
    delivered_sha: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None]
    delivery_error: Mapped[str | None] = mapped_column(Text)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worktree_removed_at: Mapped[datetime | None]
    branch_removed_at: Mapped[datetime | None]
    # Migration 0022: the last cleanup that failed, and why (retried after the others).
    cleanup_failed_at: Mapped[datetime | None]
    cleanup_error: Mapped[str | None] = mapped_column(Text)
    # Migration 0026: since when a daemon holds this run's worktree open (stamped by the
    # claim of a call); emptied once the reconciler disposed it (the run rests). The
    # last release a daemon did not answer (tried again later, after the others).
    instances_opened_at: Mapped[datetime | None]
    instances_release_failed_at: Mapped[datetime | None]


class StepRun(Base):
    """The checkpoint of one step of one run: a redelivered task reads it first."""

    __tablename__ = "step_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id"),
        CheckConstraint(_in("step_id", STEP_ID_VALUES), name="step_id"),
        CheckConstraint(_in("status", STEP_RUN_STATUSES), name="status"),
        CheckConstraint('"round" >= 1 AND attempt_base >= 0', name="round"),
        # Migration 0025: /metrics reads the outcomes and round starts since its rollup.
        Index(
            "ix_step_runs_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        Index(
            "ix_step_runs_unfinished_facts",
            "id",
            postgresql_where=text(
                "finished_at IS NULL AND (duration_ms IS NOT NULL OR output IS NOT NULL)"
            ),
        ),
        Index("ix_step_runs_next_round", "started_at", postgresql_where=text('"round" > 1')),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    output: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    fence: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    app_version: Mapped[str | None] = mapped_column(String(64))
    # The op_key of the sent call this step is parked on (no worker holds it meanwhile).
    parked_on: Mapped[str | None] = mapped_column(String(64))
    # Migration 0021: the Celery task of the delivery that entered (or resumed) the step
    # last, so a wake-up sent by the collector names it as its parent in Flower.
    task_id: Mapped[str | None] = mapped_column(String(255))
    # Migration 0015: the step's round (CompileST's round N makes plan revision N), the
    # ledger attempt its first call follows, and what the round was asked.
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempt_base: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    round_input: Mapped[dict[str, Any] | None]
    # Migration 0029: git ms measured by this round's deliveries that parked on a sent
    # call; the delivery that records the outcome adds it to its own ``git_ms``.
    parked_work_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StepRound(Base):
    """An ended round of a step, as its checkpoint stood when the next round began
    (migration 0015): the current round is the ``step_runs`` row itself."""

    __tablename__ = "step_rounds"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id", "round"),
        # Migration 0025: /metrics reads the rounds that ended, or began, since its rollup.
        Index("ix_step_rounds_finished", "finished_at"),
        Index("ix_step_rounds_next_round", "started_at", postgresql_where=text('"round" > 1')),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(32))
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    deliveries: Mapped[int] = mapped_column(Integer)
    attempt_base: Mapped[int] = mapped_column(Integer)
    round_input: Mapped[dict[str, Any] | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class WorkerProcess(Base):
    """Every API, worker and beat process says who it is at start: version truth in SQL."""

    __tablename__ = "processes"
    __table_args__ = (
        CheckConstraint(_in("kind", ("api", "worker", "beat", "cli", "collector")), name="kind"),
        # Migration 0024: beat stamps its own row every few seconds.
        Index("ix_processes_identity", "kind", "hostname", "pid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    app_version: Mapped[str] = mapped_column(String(64))
    migration_head: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime | None]  # migration 0018: stamped while the process works


ROLES = ("submitter", "approver", "admin")


class ApiToken(Base):
    """A bearer token, stored only as its sha256; the name is who acted."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("token_sha256"),
        CheckConstraint(_in("role", ROLES), name="role"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]


class UiSession(Base):
    """A web sign-in: the cookie holds a random id (stored as its sha256), never the token."""

    __tablename__ = "ui_sessions"
    __table_args__ = (UniqueConstraint("session_sha256"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class PlanApproval(Base):
    """A human decision on one exact plan (by digest) of one run."""

    __tablename__ = "plan_approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "plan_sha256"),
        CheckConstraint(_in("decision", DECISIONS), name="decision"),
        CheckConstraint(
            "(decision = 'approved') = (approved_at IS NOT NULL)", name="approved_at_iff_approved"
        ),
        # Migration 0025: /metrics reads the dispatches since its rollup.
        Index(
            "ix_plan_approvals_dispatched",
            "dispatched_at",
            postgresql_where=text("approved_at IS NOT NULL AND dispatched_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    plan_sha256: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(32))
    approver: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None]
    decided_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]


class OpenCodeCall(Base):
    """The provider ledger: one row per paid call, claimed before the call is made."""

    __tablename__ = "opencode_calls"
    __table_args__ = (
        UniqueConstraint("op_key"),
        # One row per attempt: a changed prompt (a new op_key) for an attempt already
        # claimed is refused, never a second payment (rule ledger_attempt_unique).
        UniqueConstraint("run_id", "step_id", "attempt"),
        CheckConstraint(_in("status", CALL_STATUSES), name="status"),
        CheckConstraint(_in("step_id", STEP_ID_VALUES), name="step_id"),
        CheckConstraint("attempt >= 1", name="attempt"),
        CheckConstraint("rejected IS NULL OR status = 'succeeded'", name="rejected_only_succeeded"),
        # Migration 0027: a call's spend is written when (and only when) it is settled.
        CheckConstraint(
            "(settled_at IS NULL) = (spent_usd_micro IS NULL)"
            " AND (settled_at IS NULL) = (spent_tokens IS NULL)"
            " AND spent_usd_micro >= 0 AND spent_tokens >= 0",
            name="spent_when_settled",
        ),
        Index(
            "ix_opencode_calls_sent_session",
            "session_id",
            postgresql_where=text("status = 'sent'"),
        ),
        # Migration 0023: the collector's wake finds claimed and sent calls by session.
        Index("ix_opencode_calls_session", "session_id"),
        # Migration 0025: /metrics reads the calls settled since its rollup, and unsettled.
        Index("ix_opencode_calls_settled", "settled_at"),
        # Migration 0028: `kodo doctor` counts the unknown calls (normally none) by run.
        Index("ix_opencode_calls_unknown", "run_id", postgresql_where=text("status = 'unknown'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    op_key: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(128))
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any] | None]
    usage: Mapped[dict[str, Any] | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error_name: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    rejected: Mapped[str | None] = mapped_column(Text)  # why kodo did not use the answer
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]  # the prompt is about to leave (sent_at once sent)
    finished_at: Mapped[datetime | None]
    idle_at: Mapped[datetime | None]  # the collector saw the sent call's session end
    daemon: Mapped[str | None] = mapped_column(Text)  # base URL of the daemon holding it
    # Migration 0016: the reservation this call holds on its run's budget, and when the
    # database settled it (released, and its usage spent).
    reserved_usd_micro: Mapped[int | None] = mapped_column(BigInteger)
    reserved_tokens: Mapped[int | None] = mapped_column(BigInteger)
    settled_at: Mapped[datetime | None]
    # Migration 0027: what the settle spent for this call (the usage; for a turn cut
    # short, shared.domain.vocab.CUT_SHORT, its cut step too and at least the
    # reservation: migration 0032).
    spent_usd_micro: Mapped[int | None] = mapped_column(BigInteger)
    spent_tokens: Mapped[int | None] = mapped_column(BigInteger)


class SessionToForget(Base):
    """A daemon session kodo is done with but could not delete when it tried (migration
    0031): the reconciler tries again (``next_at``) until the daemon confirms it or says
    the session is gone. Only a failed delete writes one; the table is normally empty."""

    __tablename__ = "sessions_to_forget"
    __table_args__ = (
        UniqueConstraint("session_id"),
        CheckConstraint("attempts >= 0", name="attempts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128))
    daemon: Mapped[str | None] = mapped_column(Text)  # base URL (None: the first daemon)
    directory: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)  # what the failed delete said
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)


class MetricsRollup(Base):
    """Aggregates of the facts stamped before the watermark (migration 0025): one row
    per metric family and label values. ``shared.db.repos.metrics`` folds and reads it."""

    __tablename__ = "metrics_rollup"

    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), primary_key=True)
    counts: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    sums: Mapped[list[Decimal]] = mapped_column(ARRAY(Numeric))


class MetricsRollupState(Base):
    """The rollup's one row: its watermark (NULL: nothing folded) and the bucket bounds
    it was folded with (``spec``; another spec starts the rollup over)."""

    __tablename__ = "metrics_rollup_state"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    watermark: Mapped[datetime | None]
    spec: Mapped[str] = mapped_column(Text)
    folded_at: Mapped[datetime | None]


class Artifact(Base):
    """An immutable output of a step, named and digested."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id", "name"),
        CheckConstraint(_in("kind", ARTIFACT_KINDS), name="kind"),
        CheckConstraint(_in("step_id", STEP_ID_VALUES), name="step_id"),
        CheckConstraint("size = octet_length(content)", name="size_matches"),
        CheckConstraint("sha256 = encode(sha256(content), 'hex')", name="sha256_matches"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookDelivery(Base):
    """A run event to announce (migration 0020): the outbox row, inserted in the
    transaction that moved the run; its id is the stable ``X-Kodo-Delivery``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("event", values(WebhookEvent)), name="event"),
        CheckConstraint(_in("status", values(DeliveryStatus)), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint(
            "(status = 'pending') = (next_attempt_at IS NOT NULL)", name="pending_is_due"
        ),
        # The sender and the sweep find due rows by this partial index alone.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)  # why it was skipped or given up
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One try at sending a delivery, kept whatever it ended in (migration 0020)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt"),
        CheckConstraint(_in("outcome", values(AttemptOutcome)), name="outcome"),
        CheckConstraint("attempt >= 1 AND duration_ms >= 0", name="attempt"),
        CheckConstraint(
            "(outcome = 'retry') = (next_attempt_at IS NOT NULL)", name="retry_is_scheduled"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(Text)  # the endpoint's label and origin, no path
    started_at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime | None]


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for statements built once and reused (hot paths)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


def bound(*columns: str) -> dict[str, BindParameter[Any]]:
    """``column=bindparam(column)`` for each column: the values of a prebuilt statement whose
    parameters are named after the columns they fill."""
    return {column: bindparam(column) for column in columns}
