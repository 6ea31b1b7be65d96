"""The webhook outbox (``webhook_deliveries``) and its attempts (``webhook_attempts``).

A delivery is claimed by pushing its ``next_attempt_at`` past the send's timeout in a
short transaction of its own (SKIP LOCKED, so the after-commit sender and the sweep
never take the same row at once); a sender that dies mid-request leaves it due again
when that hold runs out, so every delivery is sent at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import Intent, Run, WebhookAttempt, WebhookDelivery
from shared.domain.webhooks import AttemptOutcome, DeliveryStatus, RunFacts, WebhookEvent


@dataclass(frozen=True)
class ClaimedDelivery:
    """A due delivery this sender holds until its claim runs out."""

    id: str
    run_id: str
    event: WebhookEvent
    payload: dict[str, Any]
    attempts: int  # attempts made before this one


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as it is stored."""

    delivery_id: str
    attempt: int
    target: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: AttemptOutcome
    next_attempt_at: datetime | None


class WebhookRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def run_facts(self, run_id: str) -> RunFacts | None:
        """What a payload says about the run, as the current transaction sees it."""
        row = self.session.execute(
            select(
                Run.id,
                Run.status,
                Run.next_action,
                Run.last_step,
                Run.plan_sha256,
                Intent.repo_path,
                Intent.goal,
                Intent.submitted_by,
                Intent.base_commit,
            )
            .join(Intent, Intent.id == Run.intent_id)
            .where(Run.id == run_id)
        ).one_or_none()
        if row is None:
            return None
        return RunFacts(
            run_id=row.id,
            status=row.status,
            next_action=row.next_action,
            last_step=row.last_step,
            repo_path=row.repo_path,
            goal=row.goal,
            submitted_by=row.submitted_by,
            base_commit=row.base_commit,
            plan_sha256=row.plan_sha256,
        )

    def add(
        self,
        delivery_id: str,
        run_id: str,
        event: WebhookEvent,
        payload: dict[str, Any],
        due_at: datetime,
    ) -> None:
        self.session.execute(
            insert(WebhookDelivery).values(
                id=delivery_id,
                run_id=run_id,
                event=event.value,
                payload=payload,
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=due_at,
            )
        )

    def claim_due(
        self, now: datetime, hold_until: datetime, ids: tuple[str, ...] | None
    ) -> ClaimedDelivery | None:
        """Take the oldest due delivery (of ``ids``, if given) until ``hold_until``."""
        query = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            query = query.where(WebhookDelivery.id.in_(ids))
        row = self.session.execute(query).scalar_one_or_none()
        if row is None:
            return None
        row.next_attempt_at = hold_until
        self.session.flush()
        return ClaimedDelivery(
            row.id, row.run_id, WebhookEvent(row.event), dict(row.payload), row.attempts
        )

    def record_attempt(self, attempt: AttemptRecord, now: datetime) -> bool:
        """Store the attempt and move its delivery; False if this attempt number was
        already recorded (another sender's claim outlived ours): nothing changes."""
        inserted = self.session.execute(
            insert(WebhookAttempt)
            .values(
                delivery_id=attempt.delivery_id,
                attempt=attempt.attempt,
                target=attempt.target,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                status_code=attempt.status_code,
                error=attempt.error,
                outcome=attempt.outcome.value,
                next_attempt_at=attempt.next_attempt_at,
            )
            .on_conflict_do_nothing(index_elements=["delivery_id", "attempt"])
            .returning(WebhookAttempt.id)
        ).scalar_one_or_none()
        if inserted is None:
            return False
        status = {
            AttemptOutcome.DELIVERED: DeliveryStatus.DELIVERED,
            AttemptOutcome.RETRY: DeliveryStatus.PENDING,
            AttemptOutcome.GAVE_UP: DeliveryStatus.FAILED,
        }[attempt.outcome]
        final = status is not DeliveryStatus.PENDING
        self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == attempt.delivery_id)
            .values(
                status=status.value,
                attempts=attempt.attempt,
                next_attempt_at=attempt.next_attempt_at,
                finished_at=now if final else None,
                error=(
                    f"gave up after {attempt.attempt} attempts: {attempt.error or ''}".rstrip(": ")
                    if attempt.outcome is AttemptOutcome.GAVE_UP
                    else None
                ),
            )
        )
        return True

    def skip(self, delivery_id: str, now: datetime, reason: str) -> None:
        """End a delivery that has nowhere to go (no webhook configured for it)."""
        self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
            )
            .values(
                status=DeliveryStatus.SKIPPED.value,
                next_attempt_at=None,
                finished_at=now,
                error=reason,
            )
        )

    def skip_due(self, now: datetime, reason: str) -> int:
        """End every due delivery at once (no webhook is configured at all)."""
        skipped = self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(
                status=DeliveryStatus.SKIPPED.value,
                next_attempt_at=None,
                finished_at=now,
                error=reason,
            )
            .returning(WebhookDelivery.id)
        ).all()
        return len(skipped)

    def any_due(self, now: datetime) -> bool:
        return bool(
            self.session.execute(
                select(
                    exists().where(
                        WebhookDelivery.status == DeliveryStatus.PENDING.value,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                )
            ).scalar_one()
        )

    def deliveries(self, run_id: str | None, limit: int) -> list[WebhookDelivery]:
        """Newest first; one run's, or everyone's."""
        query = select(WebhookDelivery).order_by(
            WebhookDelivery.created_at.desc(), WebhookDelivery.id
        )
        if run_id is not None:
            query = query.where(WebhookDelivery.run_id == run_id)
        return list(self.session.execute(query.limit(limit)).scalars())

    def attempts_of_run(self, run_id: str) -> list[tuple[WebhookDelivery, WebhookAttempt]]:
        """Every attempt at every delivery of the run, oldest first."""
        rows = self.session.execute(
            select(WebhookDelivery, WebhookAttempt)
            .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .where(WebhookDelivery.run_id == run_id)
            .order_by(WebhookAttempt.started_at, WebhookAttempt.id)
        ).all()
        return [(delivery, attempt) for delivery, attempt in rows]

    def attempts_of(self, delivery_ids: list[str]) -> list[WebhookAttempt]:
        return list(
            self.session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(delivery_ids))
                .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
            ).scalars()
        )
