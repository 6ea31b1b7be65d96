"""``kodo run show``, ``kodo run diff``, ``kodo run logs``: what a run did, from the API.

``show`` puts everything on one screen (who asked, the base commit, the plan and the
decision with its comment, the step timeline, the calls, each round's diffstat, the
verification and every artifact's sha256); ``diff`` prints the patches (a repaired
run's rounds in order, each its own commit); ``logs`` prints
the verification's output and a failed run's ``diagnostic.json``. All of it is agent
text and is drawn through the views' escaping (see review_views.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from services.cli.client import ApiClient, ApiError, api_options
from services.cli.review_views import (
    RunStory,
    block_lines,
    bytes_text,
    diff_view,
    json_lines,
    latest,
    of_kind,
    round_label,
    show_view,
)
from services.cli.terminal import console, show, stdout_is_tty
from services.cli.views import one_line, terminal_rows

_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answers.")


def artifact_bytes(api: ApiClient, run_id: str, artifact: dict[str, Any]) -> bytes:
    """One artifact's bytes, named with its step (two steps may store the same name)."""
    name, step = str(artifact.get("name")), str(artifact.get("stepId"))
    return api.download(f"/runs/{run_id}/artifacts/{name}", {"step": step})


def artifact_json(api: ApiClient, run_id: str, artifact: dict[str, Any] | None) -> Any:
    if artifact is None:
        return None
    content = artifact_bytes(api, run_id, artifact)
    try:
        return json.loads(content)
    except ValueError as exc:
        raise ApiError(
            f"artifact {one_line(artifact.get('name'))} of run {one_line(run_id)} is not JSON"
        ) from exc


def story_of(api: ApiClient, run_id: str) -> RunStory:
    """Every answer ``kodo run show`` draws, read once each."""
    run = api.get(f"/runs/{run_id}")
    intent = api.get(f"/intents/{run.get('intentId', run_id)}")
    revisions = api.get(f"/runs/{run_id}/plans")
    calls = [c for c in api.get(f"/runs/{run_id}/calls").get("calls") or [] if isinstance(c, dict)]
    artifacts = api.get_list(f"/runs/{run_id}/artifacts")
    story = RunStory(run, intent, revisions, calls, artifacts)
    story.patches = [
        (str(patch.get("name")), bytes_text(artifact_bytes(api, run_id, patch)))
        for patch in of_kind(artifacts, "patch")
    ]
    decision = artifact_json(api, run_id, latest(artifacts, "decision"))
    if decision is not None and not isinstance(decision, dict):
        story.notes.append("decision.json is not a JSON object")
    story.decision = decision if isinstance(decision, dict) else None
    diagnostic = artifact_json(api, run_id, latest(artifacts, "diagnostic"))
    if diagnostic is not None and not isinstance(diagnostic, dict):
        story.notes.append("diagnostic.json is not a JSON object")
    story.diagnostic = diagnostic if isinstance(diagnostic, dict) else None
    return story


@click.command("show")
@click.argument("run_id")
@_json
@api_options
def show_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """Everything about a run on one screen: who, what, the decision, steps, cost, patch."""
    with ApiClient.from_options(api_url, token, home) as api:
        story = story_of(api, run_id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run": story.run,
                    "intent": story.intent,
                    "plans": story.revisions,
                    "calls": story.calls,
                    "artifacts": story.artifacts,
                    "decision": story.decision,
                    "diagnostic": story.diagnostic,
                },
                indent=2,
            )
        )
        return
    show(show_view(story))


@click.command("diff")
@click.argument("run_id")
@click.option(
    "--round",
    "only_round",
    type=click.IntRange(min=1),
    help="Only this round's patch (a repair round's is its change on top of the earlier).",
)
@api_options
def diff_cmd(
    run_id: str, only_round: int | None, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """The run's patch, coloured on a terminal, plain when piped.

    A repaired run has a patch per round, each a commit on top of the one before: all of
    them are printed in order, each after a ``# patch.r2.diff (round 2, ...)`` line.
    """
    with ApiClient.from_options(api_url, token, home) as api:
        patches = of_kind(api.get_list(f"/runs/{run_id}/artifacts"), "patch")
        if not patches:
            raise ApiError(f"run {one_line(run_id)} has no patch yet (ApplyPatchST stores it)")
        if only_round is not None and only_round > len(patches):
            raise ApiError(f"run {one_line(run_id)} has {len(patches)} round(s) of patches")
        rounds = range(len(patches)) if only_round is None else [only_round - 1]
        shown = [(i, bytes_text(artifact_bytes(api, run_id, patches[i]))) for i in rounds]
    for index, content in shown:
        if len(patches) > 1:
            console().print(Text(f"# {round_label(index, str(patches[index].get('name')))}"))
        out = console()  # (on a terminal: folded by kodo, never wrapped by rich or the tty)
        width = out.width if stdout_is_tty() else None
        out.print(diff_view(content, width), end="", soft_wrap=True)


@click.command("logs")
@click.argument("run_id")
@api_options
def logs_cmd(run_id: str, api_url: str | None, token: str | None, home: Path | None) -> None:
    """The verification command's output (indented under its header: all of it is the
    command's) and, for a failed run, its diagnostic.json."""
    with ApiClient.from_options(api_url, token, home) as api:
        artifacts = api.get_list(f"/runs/{run_id}/artifacts")
        output = latest(artifacts, "command_output")
        diagnostic = latest(artifacts, "diagnostic")
        if output is None and diagnostic is None:
            raise ApiError(
                f"run {one_line(run_id)} has no command output or diagnostic yet"
                " (ExecuteST stores the output; a failed step stores diagnostic.json)"
            )
        lines: list[str] = []
        if output is not None:
            lines.append(
                f"== {one_line(output.get('name'))} (sha256 {one_line(output.get('sha256'))})"
            )
            # indented: every byte of it is the command's (the agent's), and a line of
            # it flush left drew a '== diagnostic.json ...' kodo never wrote (helper-106)
            said = block_lines(bytes_text(artifact_bytes(api, run_id, output)))
            lines.extend(f"  {line}" if line else "" for line in said)
        if diagnostic is not None:
            lines.append(
                f"== {one_line(diagnostic.get('name'))} of {one_line(diagnostic.get('stepId'))}"
                f" (sha256 {one_line(diagnostic.get('sha256'))})"
            )
            lines.extend(json_lines(artifact_json(api, run_id, diagnostic)))
    if stdout_is_tty():  # each row whole: the terminal never wraps one to column 0
        width = shutil.get_terminal_size().columns
        lines = [row for line in lines for row in _rows_of(line, width)]
    click.echo("\n".join(lines))


def _rows_of(line: str, width: int) -> list[str]:
    """A line of ``kodo run logs`` folded for the terminal under kodo's indent (at most
    two blanks: the blanks a command's line starts with are its text, folded with it;
    taken as the indent, 78 of them had pushed its text onto a row of its own)."""
    indent = " " * min(2, len(line) - len(line.lstrip(" ")))
    return terminal_rows(line[len(indent) :], width, lead=indent)
