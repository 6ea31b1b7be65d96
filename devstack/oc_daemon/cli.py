"""``kodo oc install|up|down|health``: the real OpenCode daemon's lifecycle.

``up`` starts ``opencode serve`` isolated under a state directory (default
``.kodo/oc``, or ``KODO_OC_STATE_DIR``) against an OpenAI-compatible LLM: a URL you
give, or kodo's scripted LLM started beside it. It prints the ``OC_BASE_URL`` and
``OC_PASSWORD`` to export. ``down`` stops only what ``up`` recorded.

The daemon runs in a bubblewrap sandbox (:mod:`devstack.oc_daemon.sandbox`) where only
the workspaces folder (``KODO_WORKSPACE_DIR``) and its own HOME are writable, the
repository roots (``KODO_REPO_ROOTS``) read-only and kodo's ``.kodo`` out of sight.
Without bubblewrap ``up`` refuses, naming the rule; ``--no-sandbox`` is the explicit,
unsafe way out.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import click
import httpx

from devstack.handle import repo_root
from devstack.oc_daemon import daemon, install
from devstack.oc_daemon.daemon import Confinement, DaemonError
from devstack.oc_daemon.install import InstallError
from devstack.supervisor import Child, free_port, spawn
from shared.config import DEFAULTS
from shared.opencode.errors import OpenCodeError

STATE_ENV = "KODO_OC_STATE_DIR"


def _state_dir(given: str | None) -> Path:
    raw = given or os.environ.get(STATE_ENV, "").strip()
    return Path(raw).resolve() if raw else repo_root() / ".kodo" / "oc"


def _confinement(workspaces: str | None) -> Confinement:
    """The sandbox as kodo's settings describe it: the workspaces folder writable, the
    repository roots read-only, kodo's state dirs hidden."""
    env = os.environ
    where = workspaces or env.get("KODO_WORKSPACE_DIR") or DEFAULTS["KODO_WORKSPACE_DIR"]
    roots = [Path(p).resolve() for p in env.get("KODO_REPO_ROOTS", "").split(os.pathsep) if p]
    hidden = [repo_root() / ".kodo"]
    if env.get("KODO_HOME", "").strip():
        hidden.append(Path(env["KODO_HOME"]).resolve())
    return Confinement(Path(where).resolve(), tuple(roots), tuple(hidden))


def _install() -> Path:
    try:
        return install.install()
    except InstallError as exc:
        raise click.ClickException(str(exc)) from exc


def _start_scripted_llm(state_dir: Path, seed: int) -> tuple[str, Child]:
    """Run ``python -m standins.scripted_llm`` detached; return its base URL and process."""
    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "standins.scripted_llm", "--port", str(port)]
    child = spawn("scripted-llm", [*argv, "--seed", str(seed)], state_dir / "scripted-llm.log")
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if not child.alive():
            raise click.ClickException(f"scripted LLM exited {child.popen.returncode}")
        try:
            if httpx.get(f"{base}/__kodo/stats", timeout=1.0).status_code == 200:
                return f"{base}/v1", child
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    child.stop(daemon.STOP_GRACE_S)
    raise click.ClickException("scripted LLM did not start within 15s")


@click.group("oc")
def oc() -> None:
    """The real OpenCode daemon (opencode serve 1.18.33): install, up, down, health."""


@oc.command("install")
def install_cmd() -> None:
    """Install opencode-ai from the npm registry into the cache (idempotent)."""
    click.echo(str(_install()))


@oc.command("up")
@click.option("--port", default=4096, show_default=True, type=int, help="Port on 127.0.0.1.")
@click.option("--llm-url", default=None, help="OpenAI-compatible base URL (ends in /v1).")
@click.option("--scripted-llm", is_flag=True, help="Start kodo's scripted LLM beside it.")
@click.option("--password", default=None, help="Basic-auth password [default: random].")
@click.option("--seed", default=0, show_default=True, type=int, help="Scripted LLM seed.")
@click.option("--state-dir", default=None, help=f"State directory [default: ${STATE_ENV}].")
@click.option(
    "--workspaces",
    default=None,
    help="The one folder the daemon may write [default: $KODO_WORKSPACE_DIR or .kodo/workspaces].",
)
@click.option(
    "--no-sandbox",
    is_flag=True,
    help="UNSAFE: run the daemon without bubblewrap; it may then write anywhere kodo can.",
)
def up(
    port: int,
    llm_url: str | None,
    scripted_llm: bool,
    password: str | None,
    seed: int,
    state_dir: str | None,
    workspaces: str | None,
    no_sandbox: bool,
) -> None:
    """Start opencode serve (in its bubblewrap sandbox) against an LLM; wait until healthy."""
    if (llm_url is None) == (not scripted_llm):
        raise click.UsageError("give exactly one of --llm-url URL or --scripted-llm")
    binary = _install()
    where = _state_dir(state_dir)
    llm: Child | None = None
    if scripted_llm:
        llm_url, llm = _start_scripted_llm(where, seed)
    if llm_url is None:  # pragma: no cover - excluded by the usage check above
        raise click.UsageError("no LLM URL")
    try:
        state = daemon.start(
            binary,
            state_dir=where,
            port=port,
            llm_url=llm_url,
            password=password or secrets.token_urlsafe(24),
            llm_pid=None if llm is None else llm.pid,
            llm_start_ticks=None if llm is None else llm.ticks,
            confinement=None if no_sandbox else _confinement(workspaces),
        )
    except DaemonError as exc:
        if llm is not None:
            llm.stop(daemon.STOP_GRACE_S)
        raise click.ClickException(str(exc)) from exc
    click.echo(f"opencode: {state.url} (pid {state.pid}, LLM {state.llm_url})")
    if no_sandbox:
        click.echo("WARNING: no sandbox (--no-sandbox): the daemon can write anywhere", err=True)
    click.echo(f"logs: {state.log_path}")
    click.echo(f"export OC_BASE_URL={state.url} OC_USERNAME={state.username}")
    click.echo(f"export OC_PASSWORD={state.password}")


@oc.command("down")
@click.option("--state-dir", default=None, help=f"State directory [default: ${STATE_ENV}].")
def down(state_dir: str | None) -> None:
    """Stop the daemon (and scripted LLM) that `kodo oc up` started."""
    state = daemon.stop(_state_dir(state_dir))
    click.echo("nothing to stop" if state is None else f"stopped opencode pid {state.pid}")


@oc.command("health")
@click.option("--state-dir", default=None, help=f"State directory [default: ${STATE_ENV}].")
def health(state_dir: str | None) -> None:
    """Probe GET /global/health; exit non-zero unless healthy."""
    try:
        state = daemon.read_state(_state_dir(state_dir))
        if state is None:
            raise click.ClickException("no daemon recorded: run `kodo oc up` first")
        answer = daemon.probe(state.url, username=state.username, password=state.password)
    except (DaemonError, OpenCodeError) as exc:
        raise click.ClickException(f"unhealthy: {exc}") from exc
    click.echo(json.dumps(answer))
