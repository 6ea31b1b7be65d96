"""Webhooks, the pure part: which run moves notify, the payload, the signature, the
backoff schedule and where each event goes. No IO, no clock, no randomness of its own.

A receiver verifies a delivery with :func:`verify`: the ``X-Kodo-Signature`` header is
``t=<unix seconds>,v1=<hex>``, the hex being HMAC-SHA256 (the endpoint's secret as the
key) over ``<t>.`` followed by the raw body; a timestamp outside the replay window is
refused even when the signature matches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from shared.domain.run_machine import NextAction, RunStatus, Transition
from shared.hashing import canonical_bytes

SIGNATURE_HEADER = "X-Kodo-Signature"
EVENT_HEADER = "X-Kodo-Event"
DELIVERY_HEADER = "X-Kodo-Delivery"
REPLAY_WINDOW_S = 300
"""How old (or how far ahead) a signed timestamp a receiver should accept."""


class WebhookEvent(StrEnum):
    """What a delivery announces (``app.webhook_deliveries.event``)."""

    WAITING_INPUT = "waiting_input"  # a plan waits for a decision, or a question for an answer
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BUDGET = "budget"  # the run stopped: its next call would pass its budget


class DeliveryStatus(StrEnum):
    """Where a delivery stands (``app.webhook_deliveries.status``)."""

    PENDING = "pending"  # due at next_attempt_at (again, if an attempt failed)
    DELIVERED = "delivered"  # a 2xx answered one attempt
    FAILED = "failed"  # gave up after the last attempt allowed
    SKIPPED = "skipped"  # no webhook was configured for the run's repository when it was due


class AttemptOutcome(StrEnum):
    """What one attempt ended in (``app.webhook_attempts.outcome``)."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed; another attempt is scheduled
    GAVE_UP = "gave_up"  # failed, and it was the last attempt allowed


def event_of(move: Transition) -> WebhookEvent | None:
    """The event a stored run transition announces, or None (it notifies nobody)."""
    if move.to_status is RunStatus.WAITING_INPUT:
        if move.next_action is NextAction.AWAIT_BUDGET:
            return WebhookEvent.BUDGET
        return WebhookEvent.WAITING_INPUT
    if move.to_status is RunStatus.SUCCEEDED:
        return WebhookEvent.SUCCEEDED
    if move.to_status is RunStatus.FAILED:
        return WebhookEvent.FAILED
    return None


@dataclass(frozen=True)
class RunFacts:
    """What a payload says about a run: ids, status and the submitter's goal; never an
    agent's text (no plan, no error, no question)."""

    run_id: str
    status: str
    next_action: str
    last_step: str | None
    repo_path: str
    goal: str
    submitted_by: str | None
    base_commit: str | None
    plan_sha256: str | None


def payload(delivery_id: str, event: WebhookEvent, run: RunFacts, *, at: str) -> dict[str, Any]:
    """The JSON a delivery carries, stored in the outbox; ``at``: when the run moved
    (ISO 8601). Its links are paths until :func:`linked` prefixes the API's URL."""
    return {
        "id": delivery_id,
        "event": event.value,
        "occurredAt": at,
        "run": {
            "id": run.run_id,
            "status": run.status,
            "nextAction": run.next_action,
            "lastStep": run.last_step,
            "repo": run.repo_path,
            "goal": run.goal,
            "submittedBy": run.submitted_by,
            "baseCommit": run.base_commit,
            "planSha256": run.plan_sha256,
        },
        "links": {"run": f"/runs/{run.run_id}", "page": f"/ui/runs/{run.run_id}"},
    }


SAMPLE_RUN_ID = "00000000-0000-0000-0000-000000000000"


def sample(delivery_id: str, at: str) -> dict[str, Any]:
    """What ``kodo webhook test`` sends: a ``waiting_input`` event of a run that does
    not exist (its nil id and ``"test": true`` say so), signed like any other."""
    facts = RunFacts(
        run_id=SAMPLE_RUN_ID,
        status="waiting_input",
        next_action="await:approval",
        last_step="CompileST",
        repo_path="/sample/repository",
        goal="a sample event from kodo webhook test",
        submitted_by="kodo",
        base_commit=None,
        plan_sha256=None,
    )
    return {**payload(delivery_id, WebhookEvent.WAITING_INPUT, facts, at=at), "test": True}


def linked(stored: dict[str, Any], public_url: str) -> dict[str, Any]:
    """The payload as sent: its links under ``public_url`` (KODO_PUBLIC_URL; empty: paths)."""
    base = public_url.rstrip("/")
    links = stored.get("links", {})
    return {**stored, "links": {name: f"{base}{path}" for name, path in links.items()}}


def body_of(data: dict[str, Any]) -> bytes:
    """The exact bytes sent and signed (canonical JSON, UTF-8)."""
    return canonical_bytes(data)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Kodo-Signature`` value: ``t=<unix>,v1=<hex>``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


class SignatureRefused(ValueError):
    """A delivery a receiver must not trust; the message names the rule broken."""


_HEADER = re.compile(r"^t=(\d{1,12}),v1=([0-9a-f]{64})$")


def verify(
    secret: str, header: str, body: bytes, *, now: int, window_s: int = REPLAY_WINDOW_S
) -> int:
    """What a receiver does: check the header against the raw body and the replay
    window; returns the signed timestamp, or raises SignatureRefused."""
    match = _HEADER.match(header.strip())
    if match is None:
        raise SignatureRefused("signature_format: expected t=<unix>,v1=<64 hex>")
    timestamp, given = int(match.group(1)), match.group(2)
    if not hmac.compare_digest(given, signature(secret, timestamp, body)):
        raise SignatureRefused("signature_mismatch: the body or the secret differs")
    if abs(now - timestamp) > window_s:
        raise SignatureRefused(f"replay_window: signed {now - timestamp} s from now")
    return timestamp


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt n waits between half and all of
    ``min(cap_s, base_s * 2**(n-1))``; after ``max_attempts`` attempts it gives up."""

    base_s: float
    cap_s: float
    max_attempts: int

    def delay_s(self, attempt: int, jitter: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``jitter`` in
        [0, 1) is drawn by the caller from the seeded RNG (``shared.rng``)."""
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + jitter * ceiling / 2

    def gives_up_after(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


@dataclass(frozen=True)
class Endpoint:
    """Where a run's events go: a URL and its signing secret (settings only)."""

    url: str
    secret: str = field(repr=False)
    label: str = "global"  # "global", or "repository" for one of KODO_WEBHOOKS

    @property
    def origin(self) -> str:
        """scheme://host[:port], what attempts record (a path may hold a token)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class EndpointError(ValueError):
    """A webhook setting that could only fail later."""


MIN_SECRET_CHARS = 16


def endpoint(url: str, secret: str, label: str) -> Endpoint:
    """An endpoint, or EndpointError naming what is wrong (no secret is ever quoted)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range raises here, not at the first send
    except ValueError as exc:
        raise EndpointError(f"{label} webhook URL is not a URL ({exc}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"{label} webhook URL must be http(s)://host/..., got {url!r}")
    if len(secret) < MIN_SECRET_CHARS:
        raise EndpointError(
            f"the {label} webhook needs a secret of at least {MIN_SECRET_CHARS} characters"
        )
    return Endpoint(url, secret, label)


def repository_endpoints(raw: str) -> dict[str, Endpoint]:
    """``KODO_WEBHOOKS``: a JSON object ``{"/repo/path": {"url": ..., "secret": ...}}``."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EndpointError(f"KODO_WEBHOOKS is not JSON: {exc.msg}") from exc
    if not isinstance(parsed, dict):
        raise EndpointError("KODO_WEBHOOKS must be a JSON object {repo_path: {url, secret}}")
    found: dict[str, Endpoint] = {}
    for repo, entry in parsed.items():
        if not isinstance(entry, dict) or set(entry) != {"url", "secret"}:
            raise EndpointError(f"KODO_WEBHOOKS[{repo!r}] must be {{url, secret}} exactly")
        url, secret = entry["url"], entry["secret"]
        if not isinstance(url, str) or not isinstance(secret, str):
            raise EndpointError(f"KODO_WEBHOOKS[{repo!r}]: url and secret must be strings")
        found[repo] = endpoint(url, secret, "repository")
    return found


def endpoint_for(
    repo_path: str, repositories: dict[str, Endpoint], global_endpoint: Endpoint | None
) -> Endpoint | None:
    """A repository's own endpoint replaces the global one for its runs."""
    return repositories.get(repo_path, global_endpoint)


def outcome_of(status_code: int | None, *, gives_up: bool) -> AttemptOutcome:
    """Any 2xx delivers; anything else (an error, a redirect, a 4xx, a 5xx) is retried
    until the last attempt allowed."""
    if status_code is not None and 200 <= status_code < 300:
        return AttemptOutcome.DELIVERED
    return AttemptOutcome.GAVE_UP if gives_up else AttemptOutcome.RETRY
