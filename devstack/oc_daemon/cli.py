"""``kodo oc install|up|down|health``: the real OpenCode daemon's lifecycle.

``up`` starts ``opencode serve`` isolated under a state directory (default
``.kodo/oc``, or ``KODO_OC_STATE_DIR``) against one model:

* kodo's scripted stand-in: ``--scripted-llm`` starts it beside the daemon,
  ``--llm-url URL`` names one already running; ``--provider anthropic`` makes the
  daemon speak the Messages API to it instead of chat completions;
* or a real provider you bring: ``--provider KIND --model ID --api-key-env VAR
  [--base-url URL] --price input=.. --price output=.. --price cache_read=..
  --price cache_write=..`` (USD per million tokens). The key is read by the daemon from
  ``$VAR``; it is never on a command line, in the config file or in our output.

The generated config is proven by the daemon itself: ``up`` fails unless
``GET /config/providers`` offers the model at those prices. It prints the
``OC_BASE_URL``, ``OC_PASSWORD``, ``OC_PROVIDER_ID`` and ``OC_MODEL_ID`` to export.
``down`` stops only what ``up`` recorded.

The daemon runs in a bubblewrap sandbox (:mod:`devstack.oc_daemon.sandbox`) where only
the workspaces folder (``KODO_WORKSPACE_DIR``) and its own HOME are writable, and
neither the repositories (``KODO_REPO_ROOTS``) nor kodo's ``.kodo`` are there at all.
Without bubblewrap ``up`` refuses, naming the rule; ``--no-sandbox`` is the explicit,
unsafe way out.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click
import httpx

from devstack.handle import repo_root
from devstack.oc_daemon import daemon, install
from devstack.oc_daemon.config import (
    CONTEXT_LIMIT,
    OUTPUT_LIMIT,
    PRICE_KEYS,
    Prices,
    ProviderConfigError,
    ProviderKind,
    ProviderSpec,
    global_config,
    scripted_provider,
    write_config,
)
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
    """The sandbox as kodo's settings describe it: the workspaces folder writable, kodo's
    state dirs hidden (the repositories are never shown)."""
    env = os.environ
    where = workspaces or env.get("KODO_WORKSPACE_DIR") or DEFAULTS["KODO_WORKSPACE_DIR"]
    hidden = [repo_root() / ".kodo"]
    if env.get("KODO_HOME", "").strip():
        hidden.append(Path(env["KODO_HOME"]).resolve())
    return Confinement(Path(where).resolve(), tuple(hidden))


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


SCRIPTED_WIRES = (ProviderKind.OPENAI_COMPATIBLE, ProviderKind.ANTHROPIC)


def provider_spec(
    *,
    scripted: bool,
    llm_url: str | None,
    kind: ProviderKind | None,
    model: str | None,
    provider_id: str | None,
    api_key_env: str | None,
    base_url: str | None,
    prices: tuple[str, ...],
    context_limit: int,
    output_limit: int,
) -> ProviderSpec | None:
    """The spec ``up``'s options describe; ``None`` when it is the scripted LLM that
    ``up`` starts itself (its URL is known only then). UsageError for a mixed bag."""
    if scripted and llm_url is not None:
        raise click.UsageError("give --scripted-llm or --llm-url, not both")
    if scripted or llm_url is not None:
        real_only = {
            "--model": model,
            "--provider-id": provider_id,
            "--api-key-env": api_key_env,
            "--base-url": base_url,
            "--price": prices or None,
        }
        given = [name for name, value in real_only.items() if value is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: for a real provider, not the scripted stand-in"
            )
        if kind is not None and kind not in SCRIPTED_WIRES:
            raise click.UsageError(
                "the scripted stand-in speaks --provider openai-compatible or anthropic only"
            )
        if llm_url is None:
            return None
        return scripted_provider(llm_url, kind=kind or ProviderKind.OPENAI_COMPATIBLE)
    if kind is None or model is None:
        raise click.UsageError(
            "say which model: --scripted-llm, --llm-url URL (a scripted LLM), or"
            " --provider KIND --model ID (a real one)"
        )
    try:
        price = Prices.parse(prices)
    except ProviderConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    return ProviderSpec(
        kind=kind,
        model_id=model,
        prices=price,
        provider_id=provider_id or "",
        base_url=base_url,
        api_key_env=api_key_env,
        context_limit=context_limit,
        output_limit=output_limit,
    )


_PROVIDER_OPTIONS = (
    click.option("--scripted-llm", is_flag=True, help="Start kodo's scripted LLM beside it."),
    click.option(
        "--llm-url", default=None, help="A scripted LLM already up (base URL, ends in /v1)."
    ),
    click.option(
        "--provider",
        "kind",
        type=click.Choice([k.value for k in ProviderKind]),
        default=None,
        callback=lambda _ctx, _param, value: None if value is None else ProviderKind(value),
        help="A real provider's kind (or the scripted stand-in's wire).",
    ),
    click.option("--model", default=None, help="The model id the provider knows."),
    click.option("--provider-id", default=None, help="Provider id [default: the kind's name]."),
    click.option(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="The environment variable holding the key (the daemon reads it; never the key).",
    ),
    click.option("--base-url", default=None, help="The provider's base URL [default: the SDK's]."),
    click.option(
        "--price",
        "prices",
        multiple=True,
        metavar="KEY=USD",
        help=f"USD per million tokens, once for each of {', '.join(PRICE_KEYS)}.",
    ),
    click.option("--context-limit", default=CONTEXT_LIMIT, show_default=True, type=int),
    click.option("--output-limit", default=OUTPUT_LIMIT, show_default=True, type=int),
)


@dataclass(frozen=True)
class ModelChoice:
    """What the provider options said; one object for every command that takes them."""

    scripted_llm: bool
    llm_url: str | None
    kind: ProviderKind | None
    model: str | None
    provider_id: str | None
    api_key_env: str | None
    base_url: str | None
    prices: tuple[str, ...]
    context_limit: int
    output_limit: int

    def spec(self) -> ProviderSpec | None:
        """The provider spec, checked against this environment (a UsageError names what is
        wrong); None for ``--scripted-llm``, whose URL is known once it is started."""
        spec = provider_spec(
            scripted=self.scripted_llm,
            llm_url=self.llm_url,
            kind=self.kind,
            model=self.model,
            provider_id=self.provider_id,
            api_key_env=self.api_key_env,
            base_url=self.base_url,
            prices=self.prices,
            context_limit=self.context_limit,
            output_limit=self.output_limit,
        )
        if spec is not None:
            try:
                spec.check(os.environ)
            except ProviderConfigError as exc:
                raise click.UsageError(str(exc)) from exc
        return spec

    def running_spec(self) -> ProviderSpec:
        """The spec of a daemon that starts no scripted LLM itself (config, serve)."""
        if self.scripted_llm:
            raise click.UsageError("--scripted-llm starts a process: give its --llm-url instead")
        spec = self.spec()
        if spec is None:  # pragma: no cover - only --scripted-llm yields None
            raise click.UsageError("no model given")
        return spec


_CHOICE_FIELDS = tuple(f.name for f in fields(ModelChoice))


def provider_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that say which model the daemon is configured with, handed to the
    command as one ``choice: ModelChoice``."""

    @functools.wraps(command)
    def with_choice(**given: Any) -> None:
        choice = ModelChoice(**{name: given.pop(name) for name in _CHOICE_FIELDS})
        command(choice=choice, **given)

    wrapped: Callable[..., None] = with_choice
    for option in reversed(_PROVIDER_OPTIONS):
        wrapped = option(wrapped)
    return wrapped


_PLACEMENT_OPTIONS = (
    click.option("--state-dir", default=None, help=f"State directory [default: ${STATE_ENV}]."),
    click.option(
        "--workspaces",
        default=None,
        help="The one folder the daemon may write"
        " [default: $KODO_WORKSPACE_DIR or .kodo/workspaces].",
    ),
    click.option(
        "--no-sandbox",
        is_flag=True,
        help="UNSAFE: run the daemon without bubblewrap; it may then write anywhere kodo can.",
    ),
)


def placement_options(command: Callable[..., None]) -> Callable[..., None]:
    """Where the daemon keeps its state and what its sandbox lets it write."""
    for option in reversed(_PLACEMENT_OPTIONS):
        command = option(command)
    return command


@oc.command("up")
@click.option("--port", default=4096, show_default=True, type=int, help="Port on 127.0.0.1.")
@provider_options
@click.option("--password", default=None, help="Basic-auth password [default: random].")
@click.option("--seed", default=0, show_default=True, type=int, help="Scripted LLM seed.")
@placement_options
def up(
    port: int,
    choice: ModelChoice,
    password: str | None,
    seed: int,
    state_dir: str | None,
    workspaces: str | None,
    no_sandbox: bool,
) -> None:
    """Start opencode serve (in its bubblewrap sandbox) against one model; wait until it is
    healthy and offers it."""
    spec = choice.spec()
    binary = _install()
    where = _state_dir(state_dir)
    llm: Child | None = None
    if spec is None:
        url, llm = _start_scripted_llm(where, seed)
        spec = scripted_provider(url, kind=choice.kind or ProviderKind.OPENAI_COMPATIBLE)
    try:
        state = daemon.start(
            binary,
            state_dir=where,
            port=port,
            provider=spec,
            password=password or secrets.token_urlsafe(24),
            llm_pid=None if llm is None else llm.pid,
            llm_start_ticks=None if llm is None else llm.ticks,
            confinement=None if no_sandbox else _confinement(workspaces),
        )
    except DaemonError as exc:
        if llm is not None:
            llm.stop(daemon.STOP_GRACE_S)
        raise click.ClickException(str(exc)) from exc
    click.echo(f"opencode: {state.url} (pid {state.pid})")
    click.echo(f"model: {spec.describe()}")
    if no_sandbox:
        click.echo("WARNING: no sandbox (--no-sandbox): the daemon can write anywhere", err=True)
    click.echo(f"logs: {state.log_path}")
    click.echo(f"export OC_BASE_URL={state.url} OC_USERNAME={state.username}")
    click.echo(f"export OC_PASSWORD={state.password}")
    click.echo(f"export OC_PROVIDER_ID={state.provider_id} OC_MODEL_ID={state.model_id}")


@oc.command("config")
@provider_options
@click.option(
    "--write",
    "out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the config here (mode 0600) instead of printing it.",
)
def config_cmd(
    choice: ModelChoice,
    out: Path | None,
) -> None:
    """Print (or write) the daemon config `up` would use, for a daemon run elsewhere
    (the compose profile runs `opencode serve` on it). The key stays a {env:VAR}."""
    spec = choice.running_spec()
    config = global_config(spec)
    if out is None:
        click.echo(json.dumps(config, indent=2))
        return
    write_config(out, config)
    click.echo(f"{out}: {spec.describe()}", err=True)


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
        answer = daemon.probe(
            state.url,
            username=state.username,
            password=state.password,
            timeout_s=daemon.HEALTH_TIMEOUT_S,
        )
    except (DaemonError, OpenCodeError) as exc:
        raise click.ClickException(f"unhealthy: {exc}") from exc
    click.echo(json.dumps(answer))


@oc.command("serve")
@provider_options
@click.option("--hostname", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=4096, show_default=True, type=int, help="Port to bind.")
@placement_options
def serve(
    choice: ModelChoice,
    hostname: str,
    port: int,
    state_dir: str | None,
    workspaces: str | None,
    no_sandbox: bool,
) -> None:
    """Become the daemon: `opencode serve` in its bubblewrap sandbox, in the foreground.

    For a container's process (the compose profile `opencode`): the same config,
    environment allowlist and sandbox as `up`, but exec'd, with nothing recorded or
    supervised. The basic-auth password comes from $OC_PASSWORD, never from argv.
    """
    spec = choice.running_spec()
    password = os.environ.get("OC_PASSWORD", "")
    if not password:
        raise click.UsageError("export OC_PASSWORD: the daemon's password is never an argument")
    try:
        launch = daemon.prepare(
            _install(),
            state_dir=_state_dir(state_dir),
            bind=(hostname, port),
            provider=spec,
            password=password,
            environ=os.environ,
            confinement=None if no_sandbox else _confinement(workspaces),
        )
    except DaemonError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"opencode serve on {hostname}:{port}: {spec.describe()}", err=True)
    if no_sandbox:
        click.echo("WARNING: no sandbox (--no-sandbox): the daemon can write anywhere", err=True)
    os.chdir(launch.home)
    os.execve(launch.argv[0], launch.argv, launch.env)  # noqa: S606 - our argv, no shell
