"""Webhooks, the persistence: the outbox row a run event leaves, the claim a sender
takes, the attempt it records, and the reads the CLI and the run page show.

:func:`record_run_event` runs inside the transaction that moved the run, so the event
and the move commit (or roll back) together. It also names the new delivery in the
session's ``info``: a worker that installed the after-commit sender
(``services.worker.webhooks``) sends it once that transaction commits; the reconciler's
sweep sends whatever is due anyway (Postgres is the only source of truth).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shared.db.models import WebhookAttempt
from shared.db.repos.webhooks import AttemptRecord, ClaimedDelivery, WebhookRepo
from shared.domain.run_machine import Transition
from shared.domain.webhooks import AttemptOutcome, Backoff, event_of, outcome_of, payload
from shared.rng import seeded_rng

QUEUED = "kodo.webhooks.queued"
"""The session ``info`` key listing deliveries its transaction added (for after commit)."""


def record_run_event(
    s: Session,
    run_id: str,
    move: Transition,
    now: datetime,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> str | None:
    """Add the outbox row announcing ``move`` (just stored), if it notifies: its id,
    or None. The payload is read in this transaction: the run as the move left it."""
    event = event_of(move)
    if event is None:
        return None
    repo = WebhookRepo(s)
    facts = repo.run_facts(run_id)
    if facts is None:  # pragma: no cover - the move was stored on this very row
        raise LookupError(run_id)
    delivery_id = new_id()
    repo.add(
        delivery_id, run_id, event, payload(delivery_id, event, facts, at=now.isoformat()), now
    )
    s.info.setdefault(QUEUED, []).append(delivery_id)
    return delivery_id


def queued_deliveries(s: Session) -> list[str]:
    """Take the deliveries this session's transaction added (empties the list)."""
    queued: list[str] = s.info.pop(QUEUED, [])
    return queued


def claim_due(
    s: Session, now: datetime, hold_s: float, ids: tuple[str, ...] | None = None
) -> ClaimedDelivery | None:
    """Take one due delivery for ``hold_s`` (a send's timeout and some): commit before
    sending, so a sender that dies leaves it due again when the hold runs out."""
    return WebhookRepo(s).claim_due(now, now + timedelta(seconds=hold_s), ids)


@dataclass(frozen=True)
class Sent:
    """What one attempt at a delivery found, measured by the sender."""

    target: str  # the endpoint's label and origin
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


def record_attempt(
    s: Session,
    delivery: ClaimedDelivery,
    sent: Sent,
    *,
    backoff: Backoff,
    seed: int,
    now: datetime,
) -> AttemptRecord | None:
    """Record the attempt and schedule the next (jittered by the seeded RNG, per
    delivery and attempt) or end the delivery; None if another sender recorded it."""
    attempt = delivery.attempts + 1
    outcome = outcome_of(sent.status_code, gives_up=backoff.gives_up_after(attempt))
    next_at = None
    if outcome is AttemptOutcome.RETRY:
        jitter = seeded_rng(seed, "webhook", delivery.id, str(attempt)).random()
        next_at = now + timedelta(seconds=backoff.delay_s(attempt, jitter))
    record = AttemptRecord(
        delivery_id=delivery.id,
        attempt=attempt,
        target=sent.target,
        started_at=sent.started_at,
        duration_ms=sent.duration_ms,
        status_code=sent.status_code,
        error=sent.error,
        outcome=outcome,
        next_attempt_at=next_at,
    )
    return record if WebhookRepo(s).record_attempt(record, now) else None


def skip_delivery(s: Session, delivery_id: str, now: datetime) -> None:
    """Record the delivery skipped: no webhook is configured for its repository."""
    WebhookRepo(s).skip(delivery_id, now, NOWHERE)


NOWHERE = "no webhook configured for this repository (KODO_WEBHOOK_URL, KODO_WEBHOOKS)"
"""Why a delivery was skipped."""


def skip_due_deliveries(s: Session, now: datetime) -> int:
    """Record every due delivery skipped: no webhook is configured at all."""
    return WebhookRepo(s).skip_due(now, NOWHERE)


def deliveries_due(s: Session, now: datetime) -> bool:
    return WebhookRepo(s).any_due(now)


@dataclass(frozen=True)
class AttemptView:
    """One attempt as the CLI and the run page show it."""

    delivery_id: str
    event: str
    attempt: int
    target: str
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str
    next_attempt_at: datetime | None


def webhook_attempts(s: Session, run_id: str) -> list[AttemptView]:
    """Every attempt at every webhook delivery of the run, oldest first."""
    return [
        _view(delivery.event, attempt)
        for delivery, attempt in WebhookRepo(s).attempts_of_run(run_id)
    ]


def _view(event: str, attempt: WebhookAttempt) -> AttemptView:
    return AttemptView(
        delivery_id=attempt.delivery_id,
        event=event,
        attempt=attempt.attempt,
        target=attempt.target,
        started_at=attempt.started_at,
        duration_ms=attempt.duration_ms,
        status_code=attempt.status_code,
        error=attempt.error,
        outcome=attempt.outcome,
        next_attempt_at=attempt.next_attempt_at,
    )


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its attempts, newest delivery first (``kodo webhook list``)."""

    id: str
    run_id: str
    event: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    error: str | None
    tries: tuple[AttemptView, ...]


def list_deliveries(
    s: Session, *, run_id: str | None = None, limit: int = 50
) -> list[DeliveryView]:
    repo = WebhookRepo(s)
    rows = repo.deliveries(run_id, limit)
    by_delivery: dict[str, list[AttemptView]] = {row.id: [] for row in rows}
    events = {row.id: row.event for row in rows}
    for attempt in repo.attempts_of(list(by_delivery)):
        by_delivery[attempt.delivery_id].append(_view(events[attempt.delivery_id], attempt))
    return [
        DeliveryView(
            id=row.id,
            run_id=row.run_id,
            event=row.event,
            status=row.status,
            attempts=row.attempts,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at,
            error=row.error,
            tries=tuple(by_delivery[row.id]),
        )
        for row in rows
    ]
