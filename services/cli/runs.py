"""``kodo intent`` / ``kodo run`` / ``kodo calls``: the user's and approver's commands.

Everything goes through the JSON API (see client.py). Exit codes: 0 when the API
accepted the request, 1 when it refused or could not be reached, 2 for usage errors.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from services.cli.client import ApiClient, api_options
from services.cli.review import diff_cmd, logs_cmd, show_cmd
from services.cli.run_list import list_cmd
from services.cli.terminal import show
from services.cli.views import (
    budget_line,
    cache_levels,
    calls_table,
    calls_total,
    plan_card_lines,
    question_rows,
    revisions_view,
    run_view,
)
from services.cli.watch import watch
from shared.domain.display import visible

_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")


def _echo_json(body: object) -> None:
    click.echo(json.dumps(body, indent=2, sort_keys=False))


@click.group("intent")
def intent() -> None:
    """Submit a goal against a git repository."""


@intent.command("submit")
@click.option(
    "--repo",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The git repository (must lie under the API's KODO_REPO_ROOTS).",
)
@click.option("--goal", required=True, help="The change you want, in words.")
@click.option("--base-ref", default="HEAD", show_default=True, help="Git ref to branch from.")
@click.option("--submitted-by", default=None, help="Who asks (recorded on the intent).")
@click.option("--run/--no-run", "start", default=True, show_default=True, help="Start its run.")
@click.option(
    "--budget-usd", type=click.FloatRange(min=0), default=None, help="At most this spend."
)
@click.option("--budget-tokens", type=click.IntRange(min=0), default=None, help="At most these.")
@_json
@api_options
def submit(
    repo: Path,
    goal: str,
    base_ref: str,
    submitted_by: str | None,
    start: bool,
    budget_usd: float | None,
    budget_tokens: int | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Submit an intent (and by default start its run); prints the id to watch."""
    body: dict[str, Any] = {"repo": str(repo.resolve()), "goal": goal, "baseRef": base_ref}
    if submitted_by:
        body["submittedBy"] = submitted_by
    if budget_usd is not None:
        body["budgetUsd"] = budget_usd
    if budget_tokens is not None:
        body["budgetTokens"] = budget_tokens
    if start:
        body["run"] = True  # the intent and its run in one transaction
    with ApiClient.from_options(api_url, token, home) as api:
        # one key per submit: a retry after a 503 cannot make a second intent
        created = dict(api.post("/intents", body, idempotency_key=f"cli-{uuid.uuid4().hex}"))
    intent_id = str(created["intentId"])
    started = created.pop("run", None)
    if as_json:
        _echo_json({"intent": created, "run": started})
        return
    click.echo(f"intent {visible(intent_id)}")
    if started is not None:
        click.echo(f"run {visible(started['runId'])} {visible(started['status'])}")
        click.echo(f"next: kodo run watch {visible(started['runId'])}")
        click.echo(  # without --token the local admin token decides: the submitter's own
            "then: approve with the command kodo run watch prints once its plan waits"
            " (it names the plan's digest)"
        )
    else:
        click.echo(f"next: kodo run start {visible(intent_id)}")


@click.group("run")
def run() -> None:
    """Start, inspect, watch and decide on runs (a run's id is its intent's id)."""


run.add_command(watch)
run.add_command(list_cmd)
run.add_command(show_cmd)
run.add_command(diff_cmd)
run.add_command(logs_cmd)


@run.command("start")
@click.argument("run_id")
@_json
@api_options
def start_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """Start the run of an intent; repeating it is harmless (the API is idempotent)."""
    with ApiClient.from_options(api_url, token, home) as api:
        started = api.post(f"/intents/{run_id}/run")
    if as_json:
        _echo_json(started)
        return
    click.echo(f"run {visible(started['runId'])} {visible(started['status'])}")


@run.command("status")
@click.argument("run_id")
@_json
@api_options
def status_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """A run's status and steps. Exits 0 whatever the run's status (see `run watch`)."""
    with ApiClient.from_options(api_url, token, home) as api:
        current = api.get(f"/runs/{run_id}")
    if as_json:
        _echo_json(current)
        return
    show(run_view(current))


_approver = click.option(
    "--approver",
    default=None,
    help="Assert who decides: the API refuses it unless it is the token's name.",
)
_comment = click.option("--comment", default=None, help="Recorded with the decision.")


@run.command("approve")
@click.argument("run_id")
@click.option(
    "--plan-sha256",
    default=None,
    help="The digest of the plan card you read (kodo run watch prints it). Without it, on"
    " a terminal, the card is shown and approved only if you confirm.",
)
@_approver
@_comment
@_json
@api_options
def approve_cmd(
    run_id: str,
    plan_sha256: str | None,
    approver: str | None,
    comment: str | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Approve the plan you read. Its digest is sent, so a plan that changed since (a newer
    revision) is refused. Without --plan-sha256 the plan card is shown here and approved
    only when you confirm it on a terminal; anywhere else the command refuses, since
    nothing then shows a person what is approved."""
    with ApiClient.from_options(api_url, token, home) as api:
        if plan_sha256 is None:
            plan_sha256 = _confirmed_digest(api, run_id)
        body = {"planSha256": plan_sha256}
        if approver:
            body["approver"] = approver
        if comment:
            body["comment"] = comment
        decided = api.post(f"/runs/{run_id}/approve-plan", body)
    if as_json:
        _echo_json(decided)
        return
    who = visible(decided.get("approver"))
    click.echo(f"approved plan {visible(plan_sha256)} of run {visible(run_id)} as {who}")
    click.echo(f"next: kodo run watch {visible(run_id)}")


def _confirmed_question(api: ApiClient, run_id: str) -> str:
    """The digest of the question shown to the person at this terminal, once they confirm
    it is the one they answer; a ClickException (exit 1) without a terminal or a yes."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.ClickException(
            "answering needs the question you read: pass --question-sha256 DIGEST (kodo run"
            " status prints it with the question), or run this on a terminal to confirm it"
        )
    waiting = api.get(f"/runs/{run_id}")
    digest = waiting.get("questionSha256")
    if not isinstance(digest, str):
        raise click.ClickException(
            f"run {visible(run_id)} is {visible(waiting.get('status'))}: no question waits"
            " for an answer"
        )
    for row in question_rows(waiting.get("question")):
        click.echo(row)
    if not click.confirm("Is this the question you answer?", default=False):
        raise click.ClickException("not answered: nothing was sent")
    return digest


def _confirmed_digest(api: ApiClient, run_id: str, *, to: str = "approve") -> str:
    """The digest of the plan card shown to the person at this terminal, once they confirm
    it is the one they mean ``to`` approve (or send back); a ClickException (exit 1)
    without a terminal or without their yes. A digest fetched unseen would bind the
    decision to whatever revision is current, one nobody read (red-team helper-103)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.ClickException(
            f"to {to} a plan needs the one you read: pass --plan-sha256 DIGEST (kodo run"
            " watch prints it), or run this on a terminal to read and confirm it"
        )
    card = api.get(f"/runs/{run_id}/plan")
    for line in plan_card_lines(card):
        click.echo(line)
    digest = str(card.get("planSha256"))
    asked = f"{to[0].upper()}{to[1:]} this plan (sha256 {visible(digest)})?"
    if not click.confirm(asked, default=False):
        raise click.ClickException(f"nothing was sent: you did not confirm the plan to {to}")
    return digest


@run.command("reject")
@click.argument("run_id")
@_approver
@_comment
@_json
@api_options
def reject_cmd(
    run_id: str,
    approver: str | None,
    comment: str | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Reject the run's plan; the run ends `rejected`."""
    body = {"approver": approver} if approver else {}
    if comment:
        body["comment"] = comment
    with ApiClient.from_options(api_url, token, home) as api:
        decided = api.post(f"/runs/{run_id}/reject-plan", body)
    if as_json:
        _echo_json(decided)
        return
    click.echo(f"rejected the plan of run {visible(run_id)} as {visible(decided.get('approver'))}")


@run.command("request-changes")
@click.argument("run_id")
@click.option("-m", "--message", "comment", required=True, help="What the next plan must change.")
@click.option(
    "--plan-sha256",
    default=None,
    help="The digest of the plan card you read (kodo run watch prints it). Without it, on"
    " a terminal, the card is shown and sent back only if you confirm.",
)
@_approver
@_json
@api_options
def request_changes_cmd(
    run_id: str,
    comment: str,
    plan_sha256: str | None,
    approver: str | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Send the plan back to the plan agent with a comment; the run compiles a revision.

    The plan you sent back can no longer be approved: approve (or send back) the
    revision once the run is `waiting_input` again (`kodo run plans` lists them all).
    Without --plan-sha256 the plan card is shown and sent back only when you confirm it
    on a terminal; anywhere else the command refuses.
    """
    with ApiClient.from_options(api_url, token, home) as api:
        if plan_sha256 is None:
            plan_sha256 = _confirmed_digest(api, run_id, to="send back")
        body = {"planSha256": plan_sha256, "comment": comment}
        if approver:
            body["approver"] = approver
        asked = api.post(f"/runs/{run_id}/request-changes", body)
    if as_json:
        _echo_json(asked)
        return
    click.echo(
        f"requested changes to plan {visible(plan_sha256)} of run {visible(run_id)};"
        f" revision {asked.get('revision')} is compiling"
    )
    click.echo(f"next: kodo run watch {visible(run_id)}")


@run.command("answer")
@click.argument("run_id")
@click.option("-m", "--message", "answer", required=True, help="Your answer to the question.")
@click.option(
    "--question-sha256",
    "question_sha256",
    default=None,
    help="The digest of the question you answer (kodo run status prints it); without"
    " it, on a terminal, the waiting question is shown for you to confirm.",
)
@_approver
@_json
@api_options
def answer_cmd(
    run_id: str,
    answer: str,
    question_sha256: str | None,
    approver: str | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Answer the question DecideST asked (`kodo run status` shows it); it decides again.

    The answer names its question: one asked since (another tab answered the first) is
    refused (409 question_superseded), never answered with words meant for another. The
    digest is the one you were shown: `kodo run status` prints it with the question, or,
    on a terminal, the waiting question is shown and you confirm it (fetching it
    unseen, the CLI took an answer typed for one question for the next: helper-99)."""
    with ApiClient.from_options(api_url, token, home) as api:
        if question_sha256 is None:
            question_sha256 = _confirmed_question(api, run_id)
        body = {
            "comment": answer,
            "questionSha256": question_sha256,
            **({"approver": approver} if approver else {}),
        }
        answered = api.post(f"/runs/{run_id}/answer", body)
    if as_json:
        _echo_json(answered)
        return
    for row in question_rows(answered.get("question")):
        click.echo(row)
    click.echo(f"answered; run {visible(run_id)} is {visible(answered.get('status'))}")
    click.echo(f"next: kodo run watch {visible(run_id)}")


@run.command("plans")
@click.argument("run_id")
@_json
@api_options
def plans_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """Every plan revision of a run, oldest first, with the decision on each."""
    with ApiClient.from_options(api_url, token, home) as api:
        listed = api.get(f"/runs/{run_id}/plans")
    if as_json:
        _echo_json(listed)
        return
    show(revisions_view(listed))


@run.command("budget")
@click.argument("run_id")
@click.option("--usd", type=click.FloatRange(min=0), default=None, help="The new USD budget.")
@click.option("--tokens", type=click.IntRange(min=0), default=None, help="The new token budget.")
@_json
@api_options
def budget_cmd(
    run_id: str,
    usd: float | None,
    tokens: int | None,
    as_json: bool,
    api_url: str | None,
    token: str | None,
    home: Path | None,
) -> None:
    """Set a run's budget (an approver); a run stopped on its budget resumes if it fits."""
    if usd is None and tokens is None:
        raise click.UsageError("name --usd, --tokens or both")
    body: dict[str, Any] = {}
    if usd is not None:
        body["budgetUsd"] = usd
    if tokens is not None:
        body["budgetTokens"] = tokens
    with ApiClient.from_options(api_url, token, home) as api:
        done = api.post(f"/runs/{run_id}/budget", body)
    if as_json:
        _echo_json(done)
        return
    click.echo(budget_line(done.get("budget") or {}))
    if done.get("resumed"):
        click.echo(f"resumed at {visible(done['resumed'])}; next: kodo run watch {visible(run_id)}")


@run.command("retry")
@click.argument("run_id")
@_json
@api_options
def retry_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """Resume a failed run at the step that failed it (an admin's token).

    Its calls get new attempt numbers: nothing paid for before is paid again.
    """
    with ApiClient.from_options(api_url, token, home) as api:
        resumed = api.post(f"/runs/{run_id}/retry")
    if as_json:
        _echo_json(resumed)
        return
    click.echo(
        f"run {visible(run_id)} resumed at {visible(resumed.get('stepId'))}"
        f" (round {resumed.get('round')}, retry count {resumed.get('retryCount')})"
    )
    click.echo(f"next: kodo run watch {visible(run_id)}")


@run.command("cancel")
@click.argument("run_id")
@_json
@api_options
def cancel_cmd(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """Cancel a run from any active state (an approver's or admin's token); idempotent."""
    with ApiClient.from_options(api_url, token, home) as api:
        cancelled = api.post(f"/runs/{run_id}/cancel")
    if as_json:
        _echo_json(cancelled)
        return
    click.echo(f"run {visible(cancelled['runId'])} {visible(cancelled['status'])}")


@click.command("calls")
@click.argument("run_id")
@_json
@api_options
def calls(
    run_id: str, as_json: bool, api_url: str | None, token: str | None, home: Path | None
) -> None:
    """The run's provider ledger: step, agent, attempt, status, duration, tokens, cost, and
    why each failed call failed; then the total."""
    with ApiClient.from_options(api_url, token, home) as api:
        ledger = api.get(f"/runs/{run_id}/calls")
        current = api.get(f"/runs/{run_id}")
    rows = [c for c in ledger.get("calls") or [] if isinstance(c, dict)]
    if as_json:
        _echo_json(ledger)
        return
    show(calls_table(rows, cache_levels(current)))
    click.echo(calls_total(rows))
