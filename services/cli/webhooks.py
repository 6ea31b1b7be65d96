"""``kodo webhook list|test``: every delivery and attempt, and a signed sample sent now.

``list`` reads the deliveries from Postgres (the source of truth, like ``kodo doctor``);
every value is drawn as escaped plain text (an error may quote a receiver's words).
``test`` sends a sample ``waiting_input`` event, signed with the configured secret, to
the configured URL and prints what came back; it records nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import click
from rich.table import Table

from services.cli.context import home_option, settings_for
from services.cli.terminal import show
from services.cli.views import cell, one_line
from services.worker.webhooks import post_signed
from shared.clock import SystemClock
from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.domain.webhooks import Endpoint, WebhookEvent, body_of, endpoint_for, sample
from shared.service.webhooks import DeliveryView, list_deliveries


@click.group("webhook")
def webhook() -> None:
    """Webhook deliveries and every attempt at them; send a signed sample to the URL."""


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


def deliveries_table(rows: list[DeliveryView]) -> Table:
    """One line per attempt (a delivery not tried yet, or skipped, on a line of its own)."""
    table = Table(box=None, pad_edge=False)
    for name in ("delivery", "run", "event", "status", "try", "at", "target", "code", "ms"):
        table.add_column(name, no_wrap=name != "target")
    table.add_column("outcome / next")
    table.add_column("error")
    for row in rows:
        head = (cell(row.id), cell(row.run_id), cell(row.event), cell(row.status))
        if not row.tries:
            waiting = f"due {_when(row.next_attempt_at)}" if row.next_attempt_at else "-"
            table.add_row(*head, *(cell(None) for _ in range(5)), cell(waiting), cell(row.error))
        for attempt in row.tries:
            after = (
                f"retry at {_when(attempt.next_attempt_at)}"
                if attempt.next_attempt_at is not None
                else attempt.outcome
            )
            table.add_row(
                *head,
                cell(attempt.attempt),
                cell(_when(attempt.started_at)),
                cell(attempt.target),
                cell(attempt.status_code),
                cell(attempt.duration_ms),
                cell(after),
                cell(attempt.error),
            )
    return table


def _as_json(rows: list[DeliveryView]) -> list[dict[str, object]]:
    return [
        {
            "id": row.id,
            "runId": row.run_id,
            "event": row.event,
            "status": row.status,
            "attempts": row.attempts,
            "createdAt": _when(row.created_at),
            "nextAttemptAt": _when(row.next_attempt_at) if row.next_attempt_at else None,
            "error": row.error,
            "tries": [
                {
                    "attempt": t.attempt,
                    "startedAt": _when(t.started_at),
                    "target": t.target,
                    "statusCode": t.status_code,
                    "durationMs": t.duration_ms,
                    "outcome": t.outcome,
                    "error": t.error,
                    "nextAttemptAt": _when(t.next_attempt_at) if t.next_attempt_at else None,
                }
                for t in row.tries
            ],
        }
        for row in rows
    ]


@webhook.command("list")
@click.option("--run", "run_id", default=None, help="Only this run's deliveries.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="The deliveries as JSON.")
@home_option
def list_cmd(run_id: str | None, limit: int, as_json: bool, home: Path | None) -> None:
    """Deliveries newest first, each attempt with its status code, duration, outcome,
    error and next attempt."""
    engine = make_engine(settings_for(home).database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as s:
            rows = list_deliveries(s, run_id=run_id, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(_as_json(rows), indent=2))
        return
    if not rows:
        click.echo("no webhook deliveries" + (f" for run {one_line(run_id)}" if run_id else ""))
        return
    show(deliveries_table(rows))


def configured_endpoint(settings: Settings, repo: Path | None) -> Endpoint:
    """The endpoint a run of ``repo`` notifies (the global one without ``--repo``)."""
    repositories = dict(settings.repository_webhooks)
    hook = (
        endpoint_for(str(repo.resolve()), repositories, settings.webhook)
        if repo is not None
        else settings.webhook
    )
    if hook is None:
        raise click.ClickException(
            "no webhook is configured"
            + (f" for {one_line(str(repo))}" if repo is not None else "")
            + ": set KODO_WEBHOOK_URL and KODO_WEBHOOK_SECRET"
            + " (or KODO_WEBHOOKS for one repository)"
        )
    return hook


@webhook.command("test")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Send to this repository's webhook (KODO_WEBHOOKS), else the global one.",
)
@home_option
def test_cmd(repo: Path | None, home: Path | None) -> None:
    """Send a signed sample waiting_input event to the configured URL and print the
    answer; exits 1 unless the receiver answered 2xx."""
    settings = settings_for(home)
    hook = configured_endpoint(settings, repo)
    clock = SystemClock()
    delivery_id = str(uuid.uuid4())
    body = body_of(sample(delivery_id, clock.now().isoformat()))
    sent = post_signed(
        hook,
        delivery_id,
        WebhookEvent.WAITING_INPUT.value,
        body,
        clock=clock,
        timeout_s=settings.webhook_timeout_s,
    )
    answered = f"HTTP {sent.status_code}" if sent.status_code is not None else "no answer"
    click.echo(
        f"test delivery {delivery_id} (waiting_input) to {one_line(sent.target)}:"
        f" {answered} in {sent.duration_ms} ms"
    )
    if sent.error is not None:
        raise click.ClickException(one_line(sent.error))
