"""The migrated schema guards the invariants itself."""

from __future__ import annotations

import re
from enum import StrEnum

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.domain.run_machine import RunStatus, StepId
from shared.domain.vocab import ArtifactKind, CallStatus, Decision, StepRunStatus
from shared.domain.webhooks import AttemptOutcome, DeliveryStatus, WebhookEvent
from tests.factories import OpenCodeCallFactory, PlanApprovalFactory, RunFactory

pytestmark = pytest.mark.integration


def test_a_second_ledger_row_with_the_same_op_key_is_refused(db: Session) -> None:
    first = OpenCodeCallFactory()
    with pytest.raises(IntegrityError):
        OpenCodeCallFactory(run=RunFactory(), op_key=first.op_key)


def test_a_second_ledger_row_for_the_same_run_step_and_attempt_is_refused(db: Session) -> None:
    """A changed prompt for one attempt is a new op_key: the database refuses the row."""
    first = OpenCodeCallFactory(attempt=1)
    with pytest.raises(IntegrityError, match="uq_opencode_calls_run_id_step_id_attempt"):
        OpenCodeCallFactory(run_id=first.run_id, step_id=first.step_id, attempt=1)


def test_a_parked_run_status_is_accepted(db: Session) -> None:
    run = RunFactory(status="waiting_upgrade", next_action="await:upgrade", contract_version="x")
    db.flush()
    assert db.execute(
        text("SELECT status FROM app.runs WHERE id = :r"), {"r": run.id}
    ).scalar() == ("waiting_upgrade")


def test_an_unknown_run_status_is_refused(db: Session) -> None:
    with pytest.raises(IntegrityError):
        RunFactory(status="almost_done")


def test_a_run_id_must_equal_its_intent_id(db: Session) -> None:
    with pytest.raises(IntegrityError):
        RunFactory(id="not-the-intent")


def test_an_approved_decision_must_carry_approved_at(db: Session) -> None:
    with pytest.raises(IntegrityError):
        PlanApprovalFactory(approved_at=None)


def test_an_artifact_digest_must_match_its_content(db: Session) -> None:
    run = RunFactory()
    with pytest.raises(IntegrityError):
        db.execute(
            text(
                "INSERT INTO app.artifacts (run_id, step_id, kind, name, media_type, sha256,"
                " size, content) VALUES (:r, 'CompileST', 'plan_card', 'plan.json',"
                " 'application/json', repeat('0', 64), 2, '{}')"
            ),
            {"r": run.id},
        )


def test_the_seeds_triage_queries_run_unchanged(db: Session) -> None:
    run = RunFactory()
    OpenCodeCallFactory(run=run, response={"usage": {"total_tokens": 1290}}, duration_ms=12)
    status = db.execute(
        text(
            "SELECT status, last_step, retry_count, next_action FROM app.runs WHERE intent_id = :id"
        ),
        {"id": run.intent_id},
    ).one()
    assert status.status == "compiling"
    ledger = db.execute(
        text(
            "SELECT step_id, agent, duration_ms,"
            " (response->'usage'->>'total_tokens')::int as tokens"
            " FROM app.opencode_calls WHERE run_id = :id"
        ),
        {"id": run.id},
    ).all()
    assert [(r.step_id, r.agent, r.duration_ms, r.tokens) for r in ledger] == [
        ("CompileST", "plan", 12, 1290)
    ]


VOCABULARIES: list[tuple[str, type[StrEnum]]] = [
    ("ck_runs_status", RunStatus),
    ("ck_runs_last_step", StepId),
    ("ck_step_runs_status", StepRunStatus),
    ("ck_step_runs_step_id", StepId),
    ("ck_opencode_calls_status", CallStatus),
    ("ck_opencode_calls_step_id", StepId),
    ("ck_plan_approvals_decision", Decision),
    ("ck_artifacts_kind", ArtifactKind),
    ("ck_artifacts_step_id", StepId),
    ("ck_webhook_deliveries_event", WebhookEvent),
    ("ck_webhook_deliveries_status", DeliveryStatus),
    ("ck_webhook_attempts_outcome", AttemptOutcome),
]


@pytest.mark.parametrize(("constraint", "vocabulary"), VOCABULARIES, ids=lambda v: str(v))
def test_each_stored_vocabulary_is_checked_by_the_database_with_its_enums_values(
    db: Session, constraint: str, vocabulary: type[StrEnum]
) -> None:
    definition = db.execute(
        text(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname = 'app' AND c.conname = :name AND c.contype = 'c'"
        ),
        {"name": constraint},
    ).scalar_one()
    allowed = set(re.findall(r"'([^']*)'::", definition))
    assert allowed == {member.value for member in vocabulary}, definition


def test_an_artifact_of_an_unknown_kind_is_refused(db: Session) -> None:
    run = RunFactory()
    with pytest.raises(IntegrityError, match="ck_artifacts_kind"):
        db.execute(
            text(
                "INSERT INTO app.artifacts (run_id, step_id, kind, name, media_type, sha256,"
                " size, content) VALUES (:r, 'CompileST', 'screenshot', 'shot.png',"
                " 'image/png', encode(sha256('x'), 'hex'), 1, 'x')"
            ),
            {"r": run.id},
        )


def test_a_pending_webhook_delivery_must_say_when_it_is_due(db: Session) -> None:
    run = RunFactory()
    with pytest.raises(IntegrityError, match="ck_webhook_deliveries_pending_is_due"):
        db.execute(
            text(
                "INSERT INTO app.webhook_deliveries (id, run_id, event, payload, status)"
                " VALUES ('d1', :r, 'succeeded', '{}', 'pending')"
            ),
            {"r": run.id},
        )


def test_no_index_repeats_the_leading_columns_of_another(db: Session) -> None:
    """An index whose columns lead another index of its table (neither partial) serves no
    lookup that one does not, and costs an entry on every insert and every update that
    is not HOT: the ledger's rows are updated four times a call (migration 0030)."""
    indexes = db.execute(
        text(
            "SELECT c.relname AS table_name, i.indexrelid::regclass::text AS index_name,"
            " i.indkey::int2[]::int[] AS columns"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'app' AND i.indpred IS NULL AND i.indexprs IS NULL"
        )
    ).all()
    assert len(indexes) > 10, "the query sees kodo's indexes"
    repeated = [
        (short.index_name, long.index_name)
        for short in indexes
        for long in indexes
        if short.table_name == long.table_name
        and short.index_name != long.index_name
        and list(long.columns[: len(short.columns)]) == list(short.columns)
        and len(short.columns) <= len(long.columns)
        and not (len(short.columns) == len(long.columns) and short.index_name > long.index_name)
    ]
    assert repeated == []
