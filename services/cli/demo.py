"""``kodo demo``: the main job end to end on a fresh machine.

Find or start Postgres and Redis, migrate, start the OpenCode-compatible server, a
worker, beat and the API, then submit an intent against a sample repository, show
the plan card, approve it, wait for ``succeeded`` and print the SQL triage and the
diff the agent's edits made.

``--opencode URL --model PROVIDER/MODEL`` runs the same demo against a daemon you
started (``kodo oc up --provider ...``, its ``OC_PASSWORD`` exported): no stand-in is
started, the model is checked with the daemon first, and the worktrees go where that
daemon's sandbox can see them (``KODO_WORKSPACE_DIR``, the setting ``kodo oc up`` read);
the sample repository stays in the demo's folder, which the daemon never sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import httpx
from sqlalchemy import create_engine, text

from devstack import stack as devstack
from devstack.handle import repo_root
from devstack.kodo_procs import (
    Stack,
    issue_token,
    start_api,
    start_beat,
    start_collector,
    start_oc_compat,
    start_worker,
    wait_worker_ready,
)
from devstack.sample_repo import create_sample_repo
from services.cli.doctor import check_model
from services.cli.views import plan_card_lines
from shared.config import Settings
from shared.domain.display import visible

TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}

RUN_TRIAGE = (
    "SELECT status, last_step, retry_count, next_action FROM app.runs WHERE intent_id = :id"
)
LEDGER_TRIAGE = (
    "SELECT step_id, agent, duration_ms, (response->'usage'->>'total_tokens')::int as tokens"
    " FROM app.opencode_calls WHERE run_id = :id"
)


COST_TRIAGE = (
    "SELECT sum(spent_usd_micro) / 1e6, sum(spent_tokens)"
    " FROM app.opencode_calls WHERE run_id = :id"
)


def _wait(http: httpx.Client, run_id: str, wanted: set[str], deadline_s: float) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        run: dict[str, Any] = http.get(f"/runs/{run_id}").json()
        if run["status"] != last:
            click.echo(f"  run {run_id[:8]} is {visible(run['status'])}")
            last = run["status"]
        if run["status"] in wanted:
            return run
        if run["status"] in TERMINAL:
            # the error may quote the agent (a refused plan's path): shown escaped
            said = visible(run.get("error"))
            raise click.ClickException(f"run ended {visible(run['status'])}: {said}")
        time.sleep(0.1)
    raise click.ClickException(f"run still {last} after {deadline_s:.0f}s")


def _print_plan(card: dict[str, Any]) -> None:
    """The shared plan card drawing: agent text is shown escaped, never obeyed."""
    title, *rest = plan_card_lines(card)
    click.secho(f"\n{title}", bold=True)
    for line in rest:
        click.echo(line)


def _print_triage(database_url: str, run_id: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        click.secho(f"\n-- {RUN_TRIAGE.replace(':id', repr(run_id))}", fg="cyan")
        row = conn.execute(text(RUN_TRIAGE), {"id": run_id}).one()
        click.echo(
            f"  status={row.status} last_step={row.last_step}"
            f" retry_count={row.retry_count} next_action={row.next_action}"
        )
        click.secho(f"\n-- {LEDGER_TRIAGE.replace(':id', repr(run_id))}", fg="cyan")
        click.echo(f"  {'step_id':<14}{'agent':<8}{'duration_ms':>12}{'tokens':>8}")
        for r in conn.execute(text(LEDGER_TRIAGE), {"id": run_id}):
            click.echo(f"  {r.step_id:<14}{r.agent:<8}{r.duration_ms:>12}{r.tokens:>8}")
    engine.dispose()


def _print_branch(repo: Path, branch: str) -> None:
    click.secho(f"\nBranch {branch} in {repo}:", bold=True)
    shown = subprocess.run(
        ["git", "log", "-p", "--stat", "--format=commit %H%n%n%B", f"main..{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    click.echo(visible(shown.stdout, multiline=True))  # every line of it the agent's


def _daemon_settings(
    settings: Settings, opencode_url: str | None, model: str | None
) -> dict[str, str] | None:
    """The environment that points the stack at ``--opencode URL`` (None: the stand-in)."""
    if opencode_url is None:
        if model is not None:
            raise click.UsageError("--model needs --opencode URL (the stand-in has one model)")
        return None
    if not opencode_url.startswith(("http://", "https://")):
        raise click.UsageError(f"--opencode {opencode_url!r}: not an http(s) URL")
    provider, model_id = settings.oc_provider_id, settings.oc_model_id
    if model is not None:
        provider, _, model_id = model.partition("/")
        if not provider or not model_id:
            raise click.UsageError(f"--model {model!r}: give PROVIDER/MODEL")
    return {
        "OC_BASE_URL": opencode_url.rstrip("/"),
        "OC_PROVIDER_ID": provider,
        "OC_MODEL_ID": model_id,
    }


def _say_model(settings: Settings, env: dict[str, str]) -> None:
    """Name the model the run will use, as the daemon states it; stop if it lacks it."""
    daemon = replace(
        settings,
        oc_base_url=env.get("OC_BASE_URL", settings.oc_base_url),
        oc_provider_id=env.get("OC_PROVIDER_ID", settings.oc_provider_id),
        oc_model_id=env.get("OC_MODEL_ID", settings.oc_model_id),
    )
    check = check_model(daemon, timeout_s=10.0)
    if not check.ok:
        raise click.ClickException(f"model: {visible(check.detail)}")
    click.echo(f"model: {visible(check.detail)}")


def _print_cost(database_url: str, run_id: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            cost, tokens = conn.execute(text(COST_TRIAGE), {"id": run_id}).one()
    finally:
        engine.dispose()
    click.echo(f"provider calls spent: {tokens or 0} tokens, ${float(cost or 0):.6f} in all")


@click.command("demo")
@click.option("--goal", default="Add a multiply function to calc.py with a test", show_default=True)
@click.option("--keep", is_flag=True, help="Leave the processes running after the run.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds per wait.")
@click.option(
    "--opencode",
    "opencode_url",
    default=None,
    metavar="URL",
    help="Run against the OpenCode daemon at URL (OC_PASSWORD from the environment).",
)
@click.option(
    "--model",
    default=None,
    metavar="PROVIDER/MODEL",
    help="With --opencode: the model to use [default: $OC_PROVIDER_ID/$OC_MODEL_ID].",
)
def demo(
    goal: str, keep: bool, timeout_s: float, opencode_url: str | None, model: str | None
) -> None:
    """Run one intent end to end: plan, approval, edits, verification, triage."""
    began = time.monotonic()
    settings = Settings.from_env()
    home = repo_root() / ".kodo"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = home / "demo" / stamp
    daemon = _daemon_settings(settings, opencode_url, model)
    services = devstack.up(settings.database_url, settings.redis_url)
    click.echo(services.postgres.describe())
    click.echo(services.redis.describe())
    # A daemon of the user's writes where its sandbox lets it: its workspaces folder.
    workspaces = run_dir / "workspaces" if daemon is None else settings.workspace_dir.resolve()
    repo = create_sample_repo(run_dir / "repos" / "calc")
    env = {
        **os.environ,
        "DATABASE_URL": services.postgres.url,
        "REDIS_URL": services.redis.url,
        "KODO_REPO_ROOTS": str(repo.parent),
        "KODO_WORKSPACE_DIR": str(workspaces),
        "RANDOM_SEED": str(settings.random_seed),
        "APPROVAL_POLL_S": str(settings.approval_poll_s),
        **(daemon or {}),
    }
    procs = Stack(env=env, log_dir=run_dir / "logs")
    try:
        if daemon is None:
            start_oc_compat(procs, seed=settings.random_seed)
            click.echo(f"oc-compat: {procs.oc_url}")
        else:
            procs.oc_url = daemon["OC_BASE_URL"]
        _say_model(settings, env)
        wait_worker_ready(start_worker(procs))
        click.echo("worker: ready")
        start_beat(procs)
        click.echo("beat: started")
        start_collector(procs)
        click.echo("collector: following the daemon's events")
        start_api(procs)
        click.echo(f"api: {procs.api_url}   (logs in {procs.log_dir})")
        submitter_token = issue_token(services.postgres.url, "demo-submitter", "submitter")
        approver_token = issue_token(services.postgres.url, "demo-approver", "approver")
        click.echo("tokens: demo-submitter (submitter), demo-approver (approver)")
        http = httpx.Client(
            base_url=procs.api_url,
            timeout=10.0,
            headers={"Authorization": f"Bearer {submitter_token}"},
        )
        approver = {"Authorization": f"Bearer {approver_token}"}

        click.secho(f"\nIntent: {goal}\nRepository: {repo}", bold=True)
        intent = http.post("/intents", json={"repo": str(repo), "goal": goal, "run": True})
        if intent.status_code != 201 or intent.json().get("run") is None:
            raise click.ClickException(
                f"POST /intents: {intent.status_code} {visible(intent.text)}"
            )
        run_id = intent.json()["intentId"]
        _wait(http, run_id, {"waiting_input"}, timeout_s)
        card = http.get(f"/runs/{run_id}/plan").json()
        _print_plan(card)
        click.echo("\nApproving the plan as demo-approver (the submitter may not) ...")
        approved = http.post(
            f"/runs/{run_id}/approve-plan",
            json={"planSha256": card["planSha256"]},
            headers=approver,
        )
        click.echo(f"  {approved.status_code} {json.dumps(approved.json())}")
        run = _wait(http, run_id, {"succeeded"}, timeout_s)
        _print_triage(services.postgres.url, run_id)
        _print_branch(repo, run["branch"])
        _print_cost(services.postgres.url, run_id)
        click.secho(
            f"Demo finished in {time.monotonic() - began:.1f}s: run {run_id} succeeded.", fg="green"
        )
    finally:
        if keep:
            click.echo(f"processes left running; logs in {procs.log_dir}")
        else:
            procs.stop()
