"""Rows to JSON: the API's response shapes, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.db.models import Artifact, Intent, OpenCodeCall, PlanApproval, Run, StepRun


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def intent(row: Intent) -> dict[str, Any]:
    return {
        "intentId": row.id,
        "repo": row.repo_path,
        "goal": row.goal,
        "base_ref": row.base_ref,
        "submitted_by": row.submitted_by,
        "createdAt": iso(row.created_at),
    }


def step(row: StepRun) -> dict[str, Any]:
    return {
        "stepId": row.step_id,
        "status": row.status,
        "deliveries": row.deliveries,
        "durationMs": row.duration_ms,
        "startedAt": iso(row.started_at),
        "finishedAt": iso(row.finished_at),
        "error": row.error,
    }


def run(row: Run, steps: list[StepRun]) -> dict[str, Any]:
    return {
        "runId": row.id,
        "intentId": row.intent_id,
        "status": row.status,
        "lastStep": row.last_step,
        "retryCount": row.retry_count,
        "nextAction": row.next_action,
        "appVersion": row.app_version,
        "planSha256": row.plan_sha256,
        "branch": row.branch,
        "error": row.error,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "finishedAt": iso(row.finished_at),
        "steps": [step(s) for s in steps],
    }


def approval(row: PlanApproval | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"decision": row.decision, "approver": row.approver, "approvedAt": iso(row.approved_at)}


def call(row: OpenCodeCall) -> dict[str, Any]:
    """A ledger row without its request and response bodies (those can be large)."""
    return {
        "opKey": row.op_key,
        "stepId": row.step_id,
        "attempt": row.attempt,
        "agent": row.agent,
        "sessionId": row.session_id,
        "status": row.status,
        "durationMs": row.duration_ms,
        "usage": row.usage,
        "error": row.error,
        "createdAt": iso(row.created_at),
        "finishedAt": iso(row.finished_at),
    }


def artifact(row: Artifact) -> dict[str, Any]:
    return {
        "id": row.id,
        "stepId": row.step_id,
        "kind": row.kind,
        "name": row.name,
        "mediaType": row.media_type,
        "sha256": row.sha256,
        "size": row.size,
        "createdAt": iso(row.created_at),
    }
