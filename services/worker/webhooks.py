"""The webhook sender: take a due delivery, POST it signed, record the attempt.

Each delivery is claimed in a transaction of its own, sent outside any transaction,
and its attempt recorded in another; the after-commit sender (installed by the worker's
task module) sends a run event's delivery as soon as the step that moved the run
commits, and the reconciler's sweep sends whatever is due (a retry whose time came, a
lost message, a sender that died mid-request). A request ends within the webhook's
timeout as a whole (:mod:`services.worker.deadline_http`), follows no redirect and reads
at most :data:`RESPONSE_READ_CAP` bytes of the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpcore
import structlog
from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from services.worker.deadline_http import DeadlineBackend
from shared.clock import Clock
from shared.config import Settings
from shared.db.engine import unit_of_work
from shared.domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Backoff,
    Endpoint,
    body_of,
    endpoint_for,
    linked,
    signature_header,
)
from shared.queue import QUEUE
from shared.service.webhooks import (
    Sent,
    claim_due,
    deliveries_due,
    queued_deliveries,
    record_attempt,
    skip_delivery,
    skip_due_deliveries,
)
from shared.version import app_version

log = structlog.get_logger("kodo.webhooks")

SEND_WEBHOOKS = "kodo.send_webhooks"
"""The sender task's stable name (args: the delivery ids, or None for every due one)."""

RESPONSE_READ_CAP = 4096
"""Bytes of a receiver's answer read at most (only its status code matters)."""
ERROR_CAP = 500
"""Characters of an attempt's error kept."""
BATCH = 100
"""Deliveries one send takes at most (the sweep sends again for the rest)."""
TIMEOUTS = ("connect", "read", "write", "pool")
HTTP_FAILURES = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
"""What the network does to an attempt (recorded on it, never raised): no answer in
time, no connection, an answer that is not HTTP, a URL kodo cannot send to."""


class SenderPorts(Protocol):
    """What sending needs; the worker's Runtime is one."""

    settings: Settings
    clock: Clock
    sessions: sessionmaker[Session]


def post_signed(
    hook: Endpoint,
    delivery_id: str,
    event_name: str,
    body: bytes,
    *,
    clock: Clock,
    timeout_s: float,
) -> Sent:
    """POST ``body`` to ``hook`` signed now; never raises for what the network does."""
    started_at = clock.now()
    began = clock.monotonic()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"kodo-webhooks/{app_version()}",
        EVENT_HEADER: event_name,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature_header(hook.secret, int(started_at.timestamp()), body),
    }
    status_code: int | None = None
    error: str | None = None
    # The whole exchange, not each read, within timeout_s: a receiver trickling its
    # answer a byte at a time would otherwise hold this worker thread for hours, and
    # its claim would lapse and hand the delivery to the next thread, never counted.
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpcore.ConnectionPool(
                network_backend=DeadlineBackend(deadline), max_connections=1, retries=0
            ) as pool,
            pool.stream(
                "POST",
                hook.url,
                headers=list(headers.items()),
                content=body,
                extensions={"timeout": dict.fromkeys(TIMEOUTS, timeout_s)},
            ) as response,
        ):
            status_code = response.status
            read = 0
            for chunk in response.iter_stream():
                read += len(chunk)
                if read >= RESPONSE_READ_CAP:
                    break
    except HTTP_FAILURES as exc:
        error = f"{type(exc).__name__}: {exc}"[:ERROR_CAP]
    if status_code is not None and not 200 <= status_code < 300:
        error = f"answered HTTP {status_code}"
    duration_ms = max(0, round((clock.monotonic() - began) * 1000))
    return Sent(f"{hook.label} {hook.origin}", started_at, duration_ms, status_code, error)


@dataclass(frozen=True)
class Attempted:
    """One delivery this send dealt with: its outcome (``delivered``, ``retry``,
    ``gave_up``, or ``skipped`` when no webhook was configured for it)."""

    delivery_id: str
    outcome: str


def backoff_of(settings: Settings) -> Backoff:
    return Backoff(
        settings.webhook_backoff_s, settings.webhook_backoff_max_s, settings.webhook_max_attempts
    )


def send_webhooks(ports: SenderPorts, ids: tuple[str, ...] | None = None) -> list[Attempted]:
    """Send the due deliveries (of ``ids``, if given), one claim at a time."""
    settings, clock = ports.settings, ports.clock
    repositories = dict(settings.repository_webhooks)
    hold_s = settings.webhook_timeout_s * 2 + 30
    done: list[Attempted] = []
    for _ in range(BATCH):
        with unit_of_work(ports.sessions) as s:
            due = claim_due(s, clock.now(), hold_s, ids)
        if due is None:
            break
        hook = endpoint_for(str(due.payload["run"]["repo"]), repositories, settings.webhook)
        if hook is None:
            with unit_of_work(ports.sessions) as s:
                skip_delivery(s, due.id, clock.now())
            done.append(Attempted(due.id, "skipped"))
            continue
        body = body_of(linked(due.payload, settings.public_url))
        sent = post_signed(
            hook, due.id, due.event.value, body, clock=clock, timeout_s=settings.webhook_timeout_s
        )
        with unit_of_work(ports.sessions) as s:
            record = record_attempt(
                s,
                due,
                sent,
                backoff=backoff_of(settings),
                seed=settings.random_seed,
                now=clock.now(),
            )
        if record is not None:
            log.info(
                "webhook.attempt",
                run_id=due.run_id,
                delivery_id=due.id,
                webhook_event=due.event.value,
                attempt=record.attempt,
                status_code=sent.status_code,
                outcome=record.outcome.value,
            )
            done.append(Attempted(due.id, record.outcome.value))
    return done


def send_after_commit(celery: Celery, settings: Settings) -> Callable[[], None]:
    """Send each transaction's new deliveries once it commits (this process's sessions);
    returns what removes the hook again.

    Installed once by the worker's task module. Without a webhook configured nothing is
    installed (steps then add no deliveries; the sweep records any left from when one
    was configured skipped); a send that fails is logged and the sweep sends the
    delivery later.
    """
    if not settings.webhooks_configured:
        return lambda: None

    def _send(session: Session) -> None:
        ids = queued_deliveries(session)
        if not ids:
            return
        try:
            celery.send_task(SEND_WEBHOOKS, args=[ids], queue=QUEUE)
        except Exception as error:
            log.warning(
                "webhook.send_failed",
                delivery_ids=ids,
                error=f"{type(error).__name__}: {error}",
                rule="the reconciler's sweep sends due deliveries from the rows",
            )

    def _forget(session: Session) -> None:
        queued_deliveries(session)

    event.listen(Session, "after_commit", _send)
    event.listen(Session, "after_rollback", _forget)

    def _remove() -> None:
        event.remove(Session, "after_commit", _send)
        event.remove(Session, "after_rollback", _forget)

    return _remove


def sweep_webhooks(ports: SenderPorts, celery: Celery) -> bool:
    """The reconciler's pass: if a delivery is due, ask a worker to send the due ones
    (True); with no webhook configured at all, record them skipped here instead."""
    with unit_of_work(ports.sessions) as s:
        if not ports.settings.webhooks_configured:
            skip_due_deliveries(s, ports.clock.now())
            return False
        due = deliveries_due(s, ports.clock.now())
    if not due:
        return False
    try:
        celery.send_task(SEND_WEBHOOKS, args=[None], queue=QUEUE)
    except Exception as error:
        log.warning("webhook.sweep_send_failed", error=f"{type(error).__name__}: {error}")
        return False
    return True
