"""``kodo demo``: the main job end to end on a fresh machine.

Find or start Postgres and Redis, migrate, start the OpenCode-compatible server, a
worker, beat and the API, then submit an intent against a sample repository, show
the plan card, approve it, wait for ``succeeded`` and print the SQL triage.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
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
    start_oc_compat,
    start_worker,
    wait_worker_ready,
)
from devstack.sample_repo import create_sample_repo
from services.cli.views import plan_card_lines
from shared.config import Settings

TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}

RUN_TRIAGE = (
    "SELECT status, last_step, retry_count, next_action FROM app.runs WHERE intent_id = :id"
)
LEDGER_TRIAGE = (
    "SELECT step_id, agent, duration_ms, (response->'usage'->>'total_tokens')::int as tokens"
    " FROM app.opencode_calls WHERE run_id = :id"
)


def _wait(http: httpx.Client, run_id: str, wanted: set[str], deadline_s: float) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        run: dict[str, Any] = http.get(f"/runs/{run_id}").json()
        if run["status"] != last:
            click.echo(f"  run {run_id[:8]} is {run['status']}")
            last = run["status"]
        if run["status"] in wanted:
            return run
        if run["status"] in TERMINAL:
            raise click.ClickException(f"run ended {run['status']}: {run.get('error')}")
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
    click.echo(shown.stdout)


@click.command("demo")
@click.option("--goal", default="Add a multiply function to calc.py with a test", show_default=True)
@click.option("--keep", is_flag=True, help="Leave the processes running after the run.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds per wait.")
def demo(goal: str, keep: bool, timeout_s: float) -> None:
    """Run one intent end to end: plan, approval, patch, verification, triage."""
    began = time.monotonic()
    settings = Settings.from_env()
    home = repo_root() / ".kodo"
    services = devstack.up(settings.database_url, settings.redis_url)
    click.echo(services.postgres.describe())
    click.echo(services.redis.describe())
    run_dir = home / "demo" / time.strftime("%Y%m%d-%H%M%S")
    repo = create_sample_repo(run_dir / "repos" / "calc")
    env = {
        **os.environ,
        "DATABASE_URL": services.postgres.url,
        "REDIS_URL": services.redis.url,
        "KODO_REPO_ROOTS": str(repo.parent),
        "KODO_WORKSPACE_DIR": str(run_dir / "workspaces"),
        "RANDOM_SEED": str(settings.random_seed),
        "APPROVAL_POLL_S": str(settings.approval_poll_s),
    }
    procs = Stack(env=env, log_dir=run_dir / "logs")
    try:
        start_oc_compat(procs, seed=settings.random_seed)
        click.echo(f"oc-compat: {procs.oc_url}")
        wait_worker_ready(start_worker(procs))
        click.echo("worker: ready")
        start_beat(procs)
        click.echo("beat: started")
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
        intent = http.post("/intents", json={"repo": str(repo), "goal": goal})
        if intent.status_code != 201:
            raise click.ClickException(f"POST /intents: {intent.status_code} {intent.text}")
        run_id = intent.json()["intentId"]
        started = http.post(f"/intents/{run_id}/run")
        if started.status_code != 202:
            raise click.ClickException(
                f"POST /intents/{run_id}/run: {started.status_code} {started.text}"
            )
        _wait(http, run_id, {"waiting_input"}, timeout_s)
        card = http.get(f"/runs/{run_id}/plan").json()
        _print_plan(card)
        click.echo("\nApproving the plan as demo-approver (the submitter may not) ...")
        approved = http.post(
            f"/runs/{run_id}/approve-plan",
            json={"plan_sha256": card["planSha256"]},
            headers=approver,
        )
        click.echo(f"  {approved.status_code} {json.dumps(approved.json())}")
        run = _wait(http, run_id, {"succeeded"}, timeout_s)
        _print_triage(services.postgres.url, run_id)
        _print_branch(repo, run["branch"])
        click.secho(
            f"Demo finished in {time.monotonic() - began:.1f}s: run {run_id} succeeded.", fg="green"
        )
    finally:
        if keep:
            click.echo(f"processes left running; logs in {procs.log_dir}")
        else:
            procs.stop()
