"""``kodo run list``: every run, newest first, a page at a time (``GET /runs``).

The goal, the submitter and the repository are written by whoever submitted (and a
goal may quote an agent), so each cell goes through the views' escaping; the goal is
cut to one short line so one row stays one row.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from services.cli.client import ApiClient, api_options
from services.cli.terminal import show
from services.cli.views import cell, iso_time, one_line

GOAL_CHARS = 60
"""A goal longer than this is cut (with an ellipsis) so each run stays on one row."""


def short_repo(repo: object) -> str:
    """The repository's last path component: enough to tell runs apart in a list."""
    if not isinstance(repo, str) or not repo:
        return "-"
    return Path(repo).name or repo


def truncated(text: str, limit: int = GOAL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def age(iso: object, now: datetime) -> str:
    """How long ago an ISO time was, in its largest whole unit (``45s``, ``12m``, ``2d``)."""
    then = iso_time(iso)
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def usd(value: object) -> str:
    return f"${value:.4f}" if isinstance(value, int | float) else "-"


def runs_table(runs: list[dict[str, Any]], now: datetime) -> Table:
    """One row per run: id, status, submitter, repository, settled cost, age, goal."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name, justify in (
        ("run", "left"),
        ("status", "left"),
        ("submitter", "left"),
        ("repo", "left"),
        ("cost", "right"),
        ("age", "right"),
        ("goal", "left"),
    ):
        table.add_column(name, justify="right" if justify == "right" else "left", no_wrap=True)
    for run in runs:
        table.add_row(
            cell(run.get("runId")),
            cell(run.get("status")),
            cell(run.get("submittedBy")),
            cell(short_repo(run.get("repo"))),
            cell(usd(run.get("costUsd"))),
            cell(age(run.get("createdAt"), now)),
            cell(truncated(one_line(run.get("goal")))),
        )
    return table


def query_of(
    status: str | None, submitter: str | None, repo: str | None, limit: int, cursor: str | None
) -> dict[str, str]:
    """The query string of ``GET /runs`` (a repository is matched as submitted: resolved)."""
    params = {"limit": str(limit)}
    if status is not None:
        params["status"] = status
    if submitter is not None:
        params["submitter"] = submitter
    if repo is not None:
        params["repo"] = str(Path(repo).resolve())
    if cursor is not None:
        params["cursor"] = cursor
    return params


@click.command("list")
@click.option("--waiting", is_flag=True, help="Only runs waiting for a human (waiting_input).")
@click.option("--status", default=None, help="Only runs in this status (e.g. failed).")
@click.option("--submitter", default=None, help="Only runs this person submitted.")
@click.option("--repo", default=None, help="Only runs against this repository path.")
@click.option(
    "--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="Page size."
)
@click.option("--cursor", default=None, help="The next page (the hint a page ends with).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@api_options
def list_cmd(
    waiting: bool,
    status: str | None,
    submitter: str | None,
    repo: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Runs newest first, filtered by status, submitter and repository."""
    if waiting and status is not None and status != "waiting_input":
        raise click.UsageError("--waiting means --status waiting_input; name one of them")
    params = query_of("waiting_input" if waiting else status, submitter, repo, limit, cursor)
    with ApiClient.from_options(api_url, token, home) as api:
        page = api.get("/runs", params)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    runs = [r for r in page.get("runs") or [] if isinstance(r, dict)]
    if not runs:
        click.echo("no runs")
    else:
        show(runs_table(runs, datetime.now(UTC)))
    next_cursor = page.get("nextCursor")
    if isinstance(next_cursor, str):
        click.echo(f"more: {next_page_hint(params, next_cursor)}")


def next_page_hint(params: dict[str, str], next_cursor: str) -> str:
    """The command that prints the next page: the same filters, the page's cursor."""
    argv = ["kodo", "run", "list"]
    for name in ("status", "submitter", "repo", "limit"):
        if name in params:
            argv += [f"--{name}", params[name]]
    argv += ["--cursor", next_cursor]
    return " ".join(shlex.quote(one_line(arg)) for arg in argv)
