"""``kodo up`` / ``kodo down``: the whole local kodo as detached background processes.

``up`` finds or starts Postgres and Redis (devstack), migrates, then starts
the OpenCode-compatible server (or, with ``--opencode URL``, uses the daemon there,
e.g. one ``kodo oc up`` started against a real provider), a worker, beat, the collector,
the API and Flower, each in its own session so it outlives this command, and each under
``devstack.keepalive``, which starts it again if it dies (a worker kombu crashes when
Redis restarts). Before the workers start it asks the daemon for the model the agents
will use (``OC_PROVIDER_ID/OC_MODEL_ID``) and prints it, saying plainly when it is the
scripted stand-in; a daemon that does not offer it stops ``up`` (every run would fail
otherwise). Pids, ports, URLs and log paths go to
``.kodo/up.json``; ``down`` stops exactly those process groups (SIGTERM, SIGKILL after
the grace period), plus Postgres/Redis only if this ``up`` started them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import click

from devstack import stack as devstack
from devstack.handle import DevstackError
from devstack.keepalive import LogBound
from devstack.kodo_procs import (
    KODO_NODE,
    Stack,
    flower_auth,
    issue_token,
    start_api,
    start_beat,
    start_collector,
    start_flower,
    start_oc_compat,
    start_together,
    start_worker,
    wait_worker_ready,
)
from devstack.supervisor import SURVIVED, Child, alive, port_is_free, stop_all
from services.cli import upstate
from services.cli.context import TOKEN_FILE, home_option, save_local_token
from services.cli.doctor import check_model
from services.worker.sandbox import sandbox_problem
from shared.config import ConfigError, Settings
from shared.domain.display import visible
from shared.queue import WORKER_QUEUES
from shared.redact import redact_text

API_PORT = 8000
FLOWER_PORT = 5555
FLOWER_AUTH_FILE = "flower.auth"  # user:password for Flower's UI and API, mode 0600
BEAT_READY_LINE = "beat: Starting"

UP_LOGS = LogBound(max_bytes=50 << 20, keep=5)
"""Each process's log under ``kodo up``: rotated by its keep-alive wrapper past 50 MB, five
rotated files kept (as compose bounds Docker's logs)."""


def pick_port(wanted: int, what: str) -> int | None:
    """``wanted`` when free; 0 means "any"; a busy port is announced and replaced."""
    if wanted == 0:
        return None
    if port_is_free(wanted):
        return wanted
    click.echo(f"{what}: port {wanted} is taken; using a free one")
    return None


def wait_beat(proc: Child, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"beat exited early:\n{proc.log_tail()}")
        if BEAT_READY_LINE in proc.log_since_start():  # not an earlier beat's line
            return
        time.sleep(0.1)
    raise TimeoutError(f"beat did not start:\n{proc.log_tail()}")


def _ready(name: str, where: str, began: float, at: float | None = None) -> None:
    took = ((time.monotonic() if at is None else at) - began) * 1000
    click.echo(f"{click.style('ready', fg='green')} {name:<9} {where}  in {took:.0f} ms")


def _timed(name: str, start: Callable[[], tuple[Child, str]]) -> Child:
    began = time.monotonic()
    proc, where = start()
    _ready(name, f"{where} (pid {proc.pid})", began)
    return proc


def _start_together(stack: Stack, starts: dict[str, Callable[[], tuple[Child, str]]]) -> None:
    """:func:`devstack.kodo_procs.start_together`, then say each is ready in their order,
    with the time it took; ``up.json`` lists them in that order too."""
    began = time.monotonic()

    def timed(start: Callable[[], tuple[Child, str]]) -> Callable[[], tuple[Child, str, float]]:
        def run() -> tuple[Child, str, float]:
            proc, where = start()
            return proc, where, time.monotonic()

        return run

    ready = start_together({name: timed(start) for name, start in starts.items()})
    for name, (proc, where, at) in ready.items():
        _ready(name, f"{where} (pid {proc.pid})", began, at)
    order = {name: i for i, name in enumerate(starts)}
    stack.procs.sort(key=lambda proc: order.get(proc.name, -1))


def _running(state: upstate.UpState) -> list[upstate.ProcEntry]:
    return [p for p in state.procs if alive(p.pid, p.start_ticks)]


def _say_sandbox(settings: Settings) -> None:
    """Verification commands only run sandboxed: say so now, not at the first run."""
    if not settings.sandbox:
        click.echo("WARNING: KODO_SANDBOX=off: agent commands will run UNSANDBOXED", err=True)
        return
    problem = sandbox_problem(settings, dict(os.environ))
    if problem is None:
        click.echo(f"sandbox: bubblewrap ({settings.sandbox_bwrap}) works")
    else:
        click.echo(
            f"WARNING: no sandbox ({problem}); ExecuteST will refuse to run verification"
            " commands until it works (or KODO_SANDBOX=off, unsandboxed)",
            err=True,
        )


class ModelProblem(RuntimeError):
    """The daemon does not offer the model the agents would ask for."""


def _say_model(settings: Settings, oc_url: str) -> str:
    """Print the model in use as the daemon states it (and return that line);
    ModelProblem if it is not there."""
    check = check_model(replace(settings, oc_base_url=oc_url), timeout_s=10.0)
    if not check.ok:
        raise ModelProblem(f"model: {check.detail}")
    line = f"model:    {visible(check.detail)}"
    click.echo(click.style(line, fg="yellow") if check.data.get("stand_in") is True else line)
    return line


def repo_root_warning(roots: list[str]) -> str | None:
    """Why every intent would be refused (no repository root), or None."""
    if roots:
        return None
    return (
        "WARNING: no repository root (--repo-root DIR or KODO_REPO_ROOTS): the API will"
        " refuse every intent; run `kodo down`, then `kodo up --repo-root DIR`"
    )


def next_steps(roots: list[str]) -> list[str]:
    """What to type after ``kodo up``: submit, follow, decide with an approver's token."""
    repo = f"{roots[0]}/REPO" if roots else "REPO"
    return [
        "next:",
        f'  kodo intent submit --repo {repo} --goal "what to change"',
        "  kodo run watch --follow RUN_ID",
        "  kodo token create NAME --role approver      (an approver's token, printed once)",
        "  kodo run approve RUN_ID --token TOKEN       (shows the plan, asks; without --token:"
        " the local admin decides)",
        "  kodo run list --waiting                     (what waits for a decision)",
    ]


@click.command("up")
@click.option("--api-port", default=API_PORT, show_default=True, help="0 picks a free port.")
@click.option(
    "--oc-port",
    default=None,
    type=int,
    help="Port of the OpenCode-compatible server (default: OC_BASE_URL's; 0 picks a free one).",
)
@click.option("--flower-port", default=FLOWER_PORT, show_default=True, help="0: a free port.")
@click.option(
    "--oc-compat/--no-oc-compat",
    default=True,
    show_default=True,
    help="Start the OpenCode-compatible server, or use the daemon at OC_BASE_URL as is.",
)
@click.option(
    "--opencode",
    "opencode_url",
    default=None,
    metavar="URL",
    help="Run against the OpenCode daemon at URL (implies --no-oc-compat; OC_PASSWORD,"
    " OC_PROVIDER_ID and OC_MODEL_ID from the environment, as `kodo oc up` prints them).",
)
@click.option(
    "--repo-root",
    "repo_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Where intents' repositories may lie (repeatable; default: KODO_REPO_ROOTS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the state file's content at the end.")
@home_option
def up(
    api_port: int,
    oc_port: int | None,
    flower_port: int,
    oc_compat: bool,
    opencode_url: str | None,
    repo_roots: tuple[Path, ...],
    as_json: bool,
    home: Path | None,
) -> None:
    """Start Postgres/Redis (found or started), migrations, OpenCode, worker, beat, API, Flower."""
    home = (home or upstate.default_home()).resolve()
    existing = upstate.load(home)
    running = _running(existing) if existing is not None else []
    if existing is not None and running:
        stopped = [p.name for p in existing.procs if p not in running]
        if stopped:
            raise click.ClickException(
                f"kodo is partly up (API {existing.api_url}; not running: {', '.join(stopped)});"
                " `kodo down` first"
            )
        click.echo(f"kodo is already up (API {existing.api_url}): nothing started")
        click.echo("(`kodo down` stops it; `kodo doctor` checks it)")
        return
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if opencode_url is not None:
        if not opencode_url.startswith(("http://", "https://")):
            raise click.UsageError(f"--opencode {opencode_url!r}: not an http(s) URL")
        settings = replace(settings, oc_base_url=opencode_url.rstrip("/"))
        oc_compat = False

    began = time.monotonic()
    try:
        services = devstack.up(settings.database_url, settings.redis_url, home=home)
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc
    for handle in (services.postgres, services.redis):
        _ready(handle.name, f"{handle.kind} {redact_text(handle.url)}", began)
    click.echo(f"migrations: {redact_text(services.postgres.url)} at head")

    _say_sandbox(settings)
    roots = [str(r.resolve()) for r in repo_roots] or [str(r) for r in settings.repo_roots]
    no_root = repo_root_warning(roots)
    if no_root is not None:
        click.echo(no_root, err=True)
    env = {
        **os.environ,
        "DATABASE_URL": services.postgres.url,
        "REDIS_URL": services.redis.url,
        "OC_BASE_URL": ",".join(settings.oc_base_urls),
        "KODO_REPO_ROOTS": os.pathsep.join(roots),
        "KODO_WORKSPACE_DIR": os.environ.get("KODO_WORKSPACE_DIR", str(home / "workspaces")),
    }
    # Flower's start would remove this while the others copy the environment at once.
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    stack = Stack(env=env, log_dir=home / "up" / "logs", keepalive=True, log_bound=UP_LOGS)
    stack.oc_url = settings.oc_base_url
    try:
        if oc_compat:
            default = urlsplit(settings.oc_base_url).port or 4096
            port = pick_port(default if oc_port is None else oc_port, "oc-compat")

            def _oc() -> tuple[Child, str]:
                proc = start_oc_compat(stack, seed=settings.random_seed, port=port)
                return proc, stack.oc_url

            _timed("oc-compat", _oc)
        model = _say_model(settings, stack.oc_url)
        api_at = pick_port(api_port, "api")
        flower_at = pick_port(flower_port, "flower")
        flower_login = flower_auth(home / FLOWER_AUTH_FILE)
        _start_together(
            stack,
            {
                "worker": lambda: (_worker(stack), f"celery worker {KODO_NODE} -Q {WORKER_QUEUES}"),
                "beat": lambda: (_beat(stack), "celery beat"),
                "collector": lambda: (
                    start_collector(stack),
                    "python -m services.worker.collector",
                ),
                "api": lambda: (start_api(stack, port=api_at), stack.api_url),
                "flower": lambda: (
                    start_flower(stack, flower_login, port=flower_at),
                    stack.flower_url,
                ),
            },
        )
    except (RuntimeError, TimeoutError, OSError, ModelProblem) as exc:
        stack.stop()
        raise click.ClickException(f"kodo up failed, stopped what it started: {exc}") from exc

    urls = {"oc-compat": stack.oc_url, "api": stack.api_url, "flower": stack.flower_url}
    state = upstate.UpState(
        api_url=stack.api_url,
        oc_url=stack.oc_url,
        flower_url=stack.flower_url,
        database_url=services.postgres.url,
        redis_url=services.redis.url,
        log_dir=str(stack.log_dir),
        procs=[
            upstate.ProcEntry(p.name, p.pid, str(p.log_path), urls.get(p.name), p.ticks)
            for p in stack.procs
        ],
        services_started=[
            h.name for h in (services.postgres, services.redis) if h.kind == "started"
        ],
    )
    path = upstate.save(state, home)
    token_path = save_local_token(issue_token(services.postgres.url, "local-admin", "admin"), home)
    if as_json:
        click.echo(json.dumps(state.to_json(), indent=2))
        return
    click.echo(f"\nkodo is up in {time.monotonic() - began:.1f}s (state: {path})")
    click.echo(f"API:    {stack.api_url}   (admin token for local use: {token_path})")
    click.echo(
        f"Flower: {stack.flower_url}   (user {flower_login.user}, password "
        f"{flower_login.password}; kept in {home / FLOWER_AUTH_FILE})"
    )
    click.echo(f"logs:   {stack.log_dir}")
    click.echo(model)
    if no_root is not None:
        click.echo(no_root, err=True)
    click.echo("\n".join(["", *next_steps(roots)]))


def _worker(stack: Stack) -> Child:
    proc = start_worker(stack, node=KODO_NODE)
    wait_worker_ready(proc)
    return proc


def _beat(stack: Stack) -> Child:
    proc = start_beat(stack)
    wait_beat(proc)
    return proc


@click.command("down")
@click.option("--grace", "grace_s", default=10.0, show_default=True, help="Seconds before SIGKILL.")
@home_option
def down(grace_s: float, home: Path | None) -> None:
    """Stop exactly what `kodo up` recorded (and Postgres/Redis only if it started them)."""
    home = (home or upstate.default_home()).resolve()
    state = upstate.load(home)
    if state is None:
        click.echo("nothing to stop (no up.json: `kodo up` was not run here)")
        return
    ours = []
    for entry in reversed(state.procs):
        if alive(entry.pid) and not alive(entry.pid, entry.start_ticks):
            click.echo(f"{entry.name}: pid {entry.pid} now belongs to another process; left alone")
            continue
        ours.append(entry)
    outcomes = stop_all([entry.pid for entry in ours], grace_s=grace_s)
    for entry, outcome in zip(ours, outcomes, strict=True):
        click.echo(f"{entry.name}: {outcome} (pid {entry.pid})")
    failed = SURVIVED in outcomes
    if state.services_started:
        names = tuple(state.services_started)
        for handle in devstack.down(home=home, names=names, grace_s=grace_s):
            click.echo(f"{handle.name}: stopped {handle.url} (pid {handle.pid})")
    if failed:
        raise click.ClickException("some processes survived SIGKILL; up.json kept")
    upstate.clear(home)
    (home / TOKEN_FILE).unlink(missing_ok=True)  # `up` revokes and replaces it next time
