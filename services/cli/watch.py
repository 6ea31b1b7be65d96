"""``kodo run watch``: follow a run until it ends or waits for a human.

Fed by the API's server-sent events (``GET /runs/{id}/events``) when it offers them; a
stream that ends or drops is resumed with ``Last-Event-ID`` (a few times); without the
endpoint, or past the resumes, it polls ``GET /runs/{id}`` every 0.5 s. Either way
each change re-reads the run, so the display shows what Postgres holds.

A run at ``waiting_input`` whose plan is already approved is followed on (the watcher
has not moved it yet); otherwise the plan card is printed and the command exits 0 with
the approve hint. With ``--follow`` the plan card and the hint are printed and the
watch goes on, through the approval, to the end. On a terminal the running step's
elapsed time counts up between events.

Exit codes: 0 for ``succeeded`` or (without ``--follow``) an undecided
``waiting_input``; 1 for ``failed``, ``rejected``, ``cancelled``, a timeout, or an API
error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Group
from rich.live import Live
from rich.text import Text

from services.cli.client import ApiClient, ApiError, api_options
from services.cli.terminal import console as make_console
from services.cli.views import TERMINAL, labelled, plan_card_lines, run_header, run_view
from shared.domain.display import visible

POLL_S = 0.5
STREAM_READ_TIMEOUT_S = 45.0  # above the server's 15 s keepalive


class StreamUnavailable(Exception):
    """The API has no events endpoint, refused the stream, or the stream broke."""


class EventStream:
    """``GET /runs/{id}/events`` as payloads; a reconnect sends ``Last-Event-ID``, so the
    API answers with the run's state only if it changed since the last event seen."""

    def __init__(self, api: ApiClient, run_id: str) -> None:
        self.api = api
        self.run_id = run_id
        self.last_id: str | None = None
        self.renewed = False  # the stream ended with the API's ``event: reconnect``

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield each ``event: run`` payload (``{}`` for a keepalive); StreamUnavailable on
        an answer that is not a stream, or a drop."""
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        try:
            with self.api.http.stream(
                "GET", f"/runs/{self.run_id}/events", headers=headers, timeout=timeout
            ) as reply:
                if not reply.is_success:
                    raise StreamUnavailable(f"events endpoint answered {reply.status_code}")
                yield from self._frames(reply.iter_lines())
        except (httpx.HTTPError, ValueError) as exc:
            raise StreamUnavailable(f"event stream failed: {type(exc).__name__}") from exc

    def _frames(self, lines: Iterator[str]) -> Iterator[dict[str, Any]]:
        event, frame_id = "message", None
        data: list[str] = []
        for line in lines:
            if line.startswith(":"):
                yield {}  # a keepalive: lets the caller check its deadline
                continue
            if line == "":
                if frame_id is not None:
                    self.last_id = frame_id
                if event == "reconnect":
                    self.renewed = True
                if data and event == "run":
                    payload = json.loads("\n".join(data))
                    if isinstance(payload, dict):
                        yield payload
                event, data, frame_id = "message", [], None
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line.startswith("id:"):
                frame_id = line[3:].strip()


def poll_events(api: ApiClient, run_id: str) -> Iterator[dict[str, Any]]:
    """The fallback: a snapshot every POLL_S seconds, forever (the caller decides when to stop)."""
    while True:
        yield api.get(f"/runs/{run_id}")
        time.sleep(POLL_S)


class Watcher:
    """Keeps the latest run read, decides when to stop, and draws it.

    Without ``follow`` it stops where a human must decide on the plan; with it, it
    announces each plan that waits (``on_plan``, once per digest) and goes on to the end.
    """

    def __init__(
        self,
        api: ApiClient,
        run_id: str,
        deadline: float,
        follow: bool = False,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.deadline = deadline
        self.follow_on = follow
        self.on_plan = on_plan
        self.announced: set[object] = set()
        self.run: dict[str, Any] = api.get(f"/runs/{run_id}")
        self.plan: dict[str, Any] | None = None

    def refresh(self) -> None:
        self.run = self.api.get(f"/runs/{self.run_id}")

    def done(self) -> bool:
        status = self.run.get("status")
        if status in TERMINAL:
            return True
        if status == "waiting_input":
            self.plan = self.api.get(f"/runs/{self.run_id}/plan")
            undecided = self.plan.get("approval") is None  # approved: the watcher moves it on
            if not self.follow_on:
                return undecided
            digest = self.plan.get("planSha256")
            if undecided and digest not in self.announced:
                self.announced.add(digest)
                if self.on_plan is not None:
                    self.on_plan(self.plan)
        return False

    def follow(self, source: Iterator[dict[str, Any]], on_change: Any) -> bool:
        """Consume ``source`` until done (True) or past the deadline (False)."""
        if self.done():
            return True
        last = None
        for _event in source:
            self.refresh()
            steps = tuple(
                (s.get("stepId"), s.get("status"), s.get("round"))
                for s in self.run.get("steps") or []
                if isinstance(s, dict)
            )
            snapshot = (self.run.get("status"), self.run.get("lastStep"), steps)
            if snapshot != last:
                on_change(self.run)
                last = snapshot
            if self.done():
                return True
            if time.monotonic() > self.deadline:
                return False
        return self.done()


class LiveRun:
    """The watcher's latest run, drawn anew at each refresh of the live display, so the
    running step's elapsed time counts up between events."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def __rich__(self) -> Group:
        return run_view(self.watcher.run, datetime.now(UTC))


STREAM_RESUMES = 3
"""Reconnects (with Last-Event-ID) after a stream that ended or broke, before polling;
the API's renewal of a long stream (``event: reconnect``) is resumed without counting."""


def _follow_any(w: Watcher, on_change: Any, notes: list[str]) -> bool:
    """Follow the event stream, resuming it where it broke; poll when it cannot be had."""
    stream = EventStream(w.api, w.run_id)
    why = "no event stream"
    resumed = 0
    while resumed <= STREAM_RESUMES:
        stream.renewed = False
        try:
            if w.follow(stream.events(), on_change):
                return True
            why = "the event stream ended"
        except StreamUnavailable as exc:
            why = str(exc)
            if stream.last_id is None:
                break  # never had a stream: no endpoint, or refused (e.g. too many streams)
        if time.monotonic() > w.deadline:
            return False
        if stream.renewed:
            continue  # KODO_SSE_MAX_S: the API asked for a fresh stream, nothing broke
        resumed += 1
        notes.append(f"{why}; resuming after event {stream.last_id}")
    notes.append(f"{why}; polling GET /runs/{w.run_id} every {POLL_S}s")
    return w.follow(poll_events(w.api, w.run_id), on_change)


def approve_hint(run_id: str, plan_sha256: object) -> list[str]:
    """How to decide, naming the digest of the card just printed (so the approval is of
    that plan, never of a newer revision) and the approver's token: without ``--token``
    the CLI sends the local admin token ``kodo up`` made, and the submitter would approve
    its own run."""
    shown = visible(run_id)
    return [
        "",
        f"waiting for approval: kodo run approve {shown} --plan-sha256 {visible(plan_sha256)}"
        " --token APPROVER_TOKEN",
        f"  (or: kodo run reject {shown} --token APPROVER_TOKEN;"
        " make one with: kodo token create NAME --role approver)",
    ]


@click.command("watch")
@click.argument("run_id")
@click.option("--timeout", "timeout_s", default=900.0, show_default=True, help="Give up after S.")
@click.option(
    "--follow",
    is_flag=True,
    help="Go on through the approval (printing the plan and how to decide) to the end.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per change, then the last.")
@api_options
def watch(
    run_id: str,
    timeout_s: float,
    follow: bool,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Follow a run live until it ends, or stops for approval (then print the plan card);
    with --follow, through the approval to the end."""
    console = make_console()
    notes: list[str] = []

    def plan_waits(plan: dict[str, Any]) -> None:
        if not as_json:
            hint = approve_hint(run_id, plan.get("planSha256"))
            # soft_wrap: a line wider than the terminal is not broken, so the approve
            # command (with its 64-digit digest) is still one command when copied
            console.print(Text("\n".join([*plan_card_lines(plan), *hint])), soft_wrap=True)

    with ApiClient.from_options(api_url, token, home) as api:
        w = Watcher(api, run_id, time.monotonic() + timeout_s, follow=follow, on_plan=plan_waits)
        if as_json:
            click.echo(json.dumps(w.run))
            finished = _follow_any(w, lambda r: click.echo(json.dumps(r)), notes)
        elif console.is_terminal:
            with Live(LiveRun(w), console=console, refresh_per_second=4):
                finished = _follow_any(w, lambda _: None, notes)  # drawn at each refresh
        else:
            click.echo(run_header(w.run))
            finished = _follow_any(w, lambda r: click.echo(run_header(r)), notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not finished:
        raise ApiError(
            f"run {visible(run_id)} still {visible(w.run.get('status'))} after {timeout_s:.0f}s"
        )
    status = w.run.get("status")
    if status == "waiting_input" and w.plan is not None and not follow:
        if not as_json:
            click.echo("")
            for line in plan_card_lines(w.plan):
                click.echo(line)
            for line in approve_hint(run_id, w.plan.get("planSha256")):
                click.echo(line)
        return
    if status == "succeeded":
        if not as_json:
            branch = visible(w.run.get("branch"))
            click.secho(f"run {visible(run_id)} succeeded (branch {branch})", fg="green")
        return
    error = w.run.get("error") or "no error recorded"
    # the error may quote the agent: folded under its label, never a row of its own
    rows = "\n".join(labelled("error:", visible(error)))
    raise ApiError(f"run {visible(run_id)} ended {visible(status)}:\n{rows}")
