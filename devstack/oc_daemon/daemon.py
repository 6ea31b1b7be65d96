"""Start, probe and stop one isolated ``opencode serve``, remembered in a state file.

Isolation: its own HOME (and XDG dirs) under the state directory, so its database,
logs and caches never mix with a user's; the global config via ``OPENCODE_CONFIG``;
every ``OPENCODE_DISABLE_*`` switch on, so it never fetches, updates, shares or reads
a target repository's ``opencode.json``; an environment built from an allowlist (no
database URL, token or other secret of the caller's); basic auth; bound to 127.0.0.1
only; and, given a :class:`Confinement`, inside the bubblewrap sandbox of
:mod:`devstack.oc_daemon.sandbox` (only the workspaces folder and its HOME writable).

Provider: one :class:`~devstack.oc_daemon.config.ProviderSpec` (kodo's scripted LLM, or
a real provider whose key the daemon reads from the environment variable the spec
names). ``start`` checks the spec first, and once the daemon is healthy reads
``GET /config/providers`` back: the daemon must offer the configured model at the
configured prices, or it is stopped and the difference reported (the key it echoes
there is never printed).

A probe of ``/global/health`` sent while the daemon boots can hang for minutes
(OpenCode notes §5.2), so every probe has a short timeout and is retried. It runs under
:mod:`devstack.supervisor`: stopping sends SIGTERM to its process group, then SIGKILL
after a grace period (§5.3: it once ignored SIGTERM), and only to the process started
at the recorded time (a reused pid is left alone).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.oc_daemon import sandbox
from devstack.oc_daemon.config import (
    MODEL_ID,
    PROVIDER_ID,
    ProviderConfigError,
    ProviderKind,
    ProviderSpec,
    global_config,
    write_config,
)
from devstack.supervisor import Child, alive, spawn
from devstack.supervisor import stop as stop_process
from shared.model_in_use import OfferedModel, offered
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodeError
from shared.private_file import write_private

STATE_FILE = "daemon.json"
USERNAME = "opencode"
PROBE_TIMEOUT_S = 1.0  # each of the boot wait's repeated probes
HEALTH_TIMEOUT_S = 10.0
"""``kodo oc health``'s one probe. The daemon is a Node process: on a loaded two-core
host (CI with two test workers) a daemon just started took over a second to answer,
and one slow answer is not an unhealthy daemon; one that cannot answer in 10 s is."""
BOOT_DEADLINE_S = 60.0
STOP_GRACE_S = 5.0

DISABLE_SWITCHES = (
    "OPENCODE_DISABLE_AUTOUPDATE",
    "OPENCODE_DISABLE_MODELS_FETCH",
    "OPENCODE_DISABLE_LSP_DOWNLOAD",
    "OPENCODE_DISABLE_SHARE",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS",
    "OPENCODE_DISABLE_PROJECT_CONFIG",
    "OPENCODE_DISABLE_AUTOCOMPACT",  # beside compaction.auto = false in its config
)
PASSED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
)
"""What the daemon inherits from the caller; everything else (DATABASE_URL, tokens, any
OPENCODE_/XDG_ setting) stays out."""

_OPTIONAL_INTS = ("llm_pid", "start_ticks", "llm_start_ticks")


class DaemonError(RuntimeError):
    """The daemon did not start, is not ours, or is not healthy."""


@dataclass(frozen=True)
class Confinement:
    """Where a sandboxed daemon may write (``workspaces``) and kodo's state it must never
    see (``hidden``); see :mod:`devstack.oc_daemon.sandbox`. The source repositories are
    never shown to it."""

    workspaces: Path
    hidden: tuple[Path, ...] = ()
    bwrap: str = "bwrap"


@dataclass(frozen=True)
class DaemonState:
    """What ``kodo oc up`` started; ``kodo oc down|health`` read it back."""

    pid: int
    url: str
    username: str
    password: str
    home: str
    log_path: str
    llm_url: str  # the provider's base URL; "" when it is the SDK's own endpoint
    llm_pid: int | None = None
    start_ticks: int | None = None  # /proc start times: a reused pid is never signalled
    llm_start_ticks: int | None = None
    sandboxed: bool = False
    provider_kind: str = ProviderKind.OPENAI_COMPATIBLE.value
    provider_id: str = PROVIDER_ID
    model_id: str = MODEL_ID
    stand_in: bool = True
    api_key_env: str | None = None  # the variable's name, never the key

    @property
    def model(self) -> str:
        return f"{self.provider_id}/{self.model_id}"

    @classmethod
    def from_json(cls, raw: object) -> DaemonState:
        if not isinstance(raw, dict):
            raise DaemonError("daemon state is not an object")
        try:
            llm_pid, ticks, llm_ticks = (raw.get(k) for k in _OPTIONAL_INTS)
            key_env = raw.get("api_key_env")
            return cls(
                pid=int(raw["pid"]),
                url=str(raw["url"]),
                username=str(raw["username"]),
                password=str(raw["password"]),
                home=str(raw["home"]),
                log_path=str(raw["log_path"]),
                llm_url=str(raw["llm_url"]),
                llm_pid=int(llm_pid) if llm_pid is not None else None,
                start_ticks=int(ticks) if ticks is not None else None,
                llm_start_ticks=int(llm_ticks) if llm_ticks is not None else None,
                sandboxed=raw.get("sandboxed") is True,
                provider_kind=str(raw.get("provider_kind", ProviderKind.OPENAI_COMPATIBLE)),
                provider_id=str(raw.get("provider_id", PROVIDER_ID)),
                model_id=str(raw.get("model_id", MODEL_ID)),
                stand_in=raw.get("stand_in", True) is True,
                api_key_env=str(key_env) if key_env is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DaemonError(f"daemon state is malformed: {exc}") from exc


def daemon_env(
    base: Mapping[str, str],
    *,
    home: Path,
    config_path: Path,
    password: str,
    key_env: str | None = None,
) -> dict[str, str]:
    """The daemon's environment: the :data:`PASSED_ENV` of ``base``, the provider key's
    variable ``key_env`` (the config names it as ``{env:VAR}``), plus ours."""
    passed = (*PASSED_ENV, key_env) if key_env else PASSED_ENV
    env = {k: base[k] for k in passed if k in base}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "OPENCODE_CONFIG": str(config_path),
            "OPENCODE_SERVER_USERNAME": USERNAME,
            "OPENCODE_SERVER_PASSWORD": password,
        }
    )
    env.update({switch: "1" for switch in DISABLE_SWITCHES})
    return env


def read_state(state_dir: Path) -> DaemonState | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return DaemonState.from_json(json.loads(path.read_text()))
    except ValueError as exc:
        raise DaemonError(f"{path}: {exc}") from exc


def _write_state(state_dir: Path, state: DaemonState) -> None:
    # it holds the daemon's password: private from its first byte
    write_private(state_dir / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def _client(
    url: str, username: str, password: str, timeout_s: float = PROBE_TIMEOUT_S
) -> OpenCodeClient:
    return OpenCodeClient(url, timeout_s=timeout_s, username=username, password=password)


def probe(
    url: str,
    *,
    username: str = USERNAME,
    password: str = "",
    timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[str, Any]:
    """One ``GET /global/health`` within ``timeout_s``; raises OpenCodeError if unhealthy."""
    with _client(url, username, password, timeout_s) as client:
        answer = client.health(timeout_s=timeout_s)
    if answer.get("healthy") is not True:
        raise DaemonError(f"{url} says it is not healthy: {answer!r:.200}")
    return answer


def _wait_healthy(child: Child, url: str, password: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    last = "no probe answered"
    while time.monotonic() < end:
        if not child.alive():
            raise DaemonError(
                f"opencode exited {child.popen.returncode} while booting:\n{child.log_tail(30)}"
            )
        try:
            probe(url, password=password)
            return
        except (OpenCodeError, DaemonError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise DaemonError(f"opencode not healthy at {url} within {deadline_s}s ({last})")


def read_providers(url: str, *, username: str = USERNAME, password: str = "") -> object:
    """``GET /config/providers`` (its ``options`` hold the provider's key: never print it)."""
    try:
        reply = httpx.get(f"{url}/config/providers", auth=(username, password), timeout=10.0)
    except httpx.HTTPError as exc:
        raise DaemonError(f"GET /config/providers: {type(exc).__name__}: {exc}") from exc
    if reply.status_code != 200:
        raise DaemonError(f"GET /config/providers answered {reply.status_code}")
    try:
        answer: object = reply.json()
    except ValueError as exc:
        raise DaemonError("GET /config/providers: not JSON") from exc
    return answer


def verify_offered(providers: object, spec: ProviderSpec) -> OfferedModel:
    """The daemon's entry for ``spec``'s model; DaemonError unless it is the configured
    model of the configured package at the configured prices."""
    found = offered(providers, spec.provider, spec.model_id)
    rule = "the daemon must offer exactly the configured model"
    if found is None:
        raise DaemonError(
            f"{rule}: GET /config/providers has no {spec.provider}/{spec.model_id}"
            " (see the daemon's log for why it dropped the provider)"
        )
    if found.npm != spec.npm:
        raise DaemonError(f"{rule}: it serves {found.model_id} via {found.npm}, not {spec.npm}")
    if found.cost != spec.prices.as_config():
        raise DaemonError(
            f"{rule}: it prices {found.model_id} at {found.cost}, not {spec.prices.as_config()}"
        )
    return found


@dataclass(frozen=True)
class Launch:
    """How to run the daemon: its argv (bwrap's, when confined), environment and HOME."""

    argv: list[str]
    env: dict[str, str]
    home: Path


def prepare(
    binary: Path,
    *,
    state_dir: Path,
    bind: tuple[str, int],
    provider: ProviderSpec,
    password: str,
    environ: Mapping[str, str],
    confinement: Confinement | None,
) -> Launch:
    """Write the config under ``state_dir`` and say how to run ``opencode serve`` there:
    ``start`` supervises it, ``kodo oc serve`` (a container's process) execs it."""
    home = state_dir / "home"
    # the daemon's own database (every session's prompts, answers and tool output) lives
    # under its HOME, written with its umask: both folders are its owner's alone
    # (red-team helper-133 read a session's text from opencode.db-wal as another user)
    state_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    for private in (state_dir, home):
        os.chmod(private, 0o700)
    config_path = write_config(state_dir / "opencode.global.json", global_config(provider))
    host, port = bind
    argv = [str(binary), "serve", "--hostname", host, "--port", str(port)]
    child_env = daemon_env(
        environ,
        home=home,
        config_path=config_path,
        password=password,
        key_env=provider.api_key_env,
    )
    if confinement is not None:
        argv = confined_argv(confinement, binary, home, config_path, state_dir, argv, child_env)
    return Launch(argv, child_env, home)


def start(
    binary: Path,
    *,
    state_dir: Path,
    port: int,
    provider: ProviderSpec,
    password: str | None = None,
    llm_pid: int | None = None,
    llm_start_ticks: int | None = None,
    env: Mapping[str, str] | None = None,
    deadline_s: float = BOOT_DEADLINE_S,
    confinement: Confinement | None = None,
) -> DaemonState:
    """Start ``opencode serve`` on 127.0.0.1:``port`` for ``provider``, wait until it is
    healthy and offers the configured model at the configured prices, record it.

    With ``confinement`` it runs in the bubblewrap sandbox (bubblewrap missing: a
    DaemonError naming the rule); ``None`` runs it unconfined, which only an explicit
    caller choice may ask for.
    """
    environ = os.environ if env is None else env
    try:
        provider.check(environ)
    except ProviderConfigError as exc:
        raise DaemonError(str(exc)) from exc
    state_dir = state_dir.resolve()
    existing = read_state(state_dir)
    if existing is not None and alive(existing.pid, existing.start_ticks):
        raise DaemonError(f"a daemon is already up at {existing.url} (pid {existing.pid})")
    secret = password or secrets.token_urlsafe(24)
    log_path = state_dir / "opencode.log"
    url = f"http://127.0.0.1:{port}"
    launch = prepare(
        binary,
        state_dir=state_dir,
        bind=("127.0.0.1", port),
        provider=provider,
        password=secret,
        environ=environ,
        confinement=confinement,
    )
    argv, child_env, home = launch.argv, launch.env, launch.home
    child = spawn("opencode", argv, log_path, cwd=home, env=child_env)
    state = DaemonState(
        pid=child.pid,
        url=url,
        username=USERNAME,
        password=secret,
        home=str(home),
        log_path=str(log_path),
        llm_url=provider.effective_base_url or "",
        llm_pid=llm_pid,
        start_ticks=child.ticks,
        llm_start_ticks=llm_start_ticks,
        sandboxed=confinement is not None,
        provider_kind=provider.kind.value,
        provider_id=provider.provider,
        model_id=provider.model_id,
        stand_in=provider.stand_in,
        api_key_env=provider.api_key_env,
    )
    _write_state(state_dir, state)
    try:
        _wait_healthy(child, url, secret, deadline_s)
        verify_offered(read_providers(url, password=secret), provider)
    except BaseException:
        child.stop(STOP_GRACE_S)
        raise
    return state


def confined_argv(
    confinement: Confinement,
    binary: Path,
    home: Path,
    config_path: Path,
    state_dir: Path,
    argv: list[str],
    env: Mapping[str, str],
) -> list[str]:
    """``argv`` inside the daemon's sandbox; the state directory is always hidden."""
    try:
        box = sandbox.DaemonSandbox(
            bwrap=sandbox.find_bwrap(confinement.bwrap, env.get("PATH")),
            binary=binary.resolve(),
            home=home,
            config=config_path,
            workspaces=confinement.workspaces.resolve(),
            hidden=tuple(dict.fromkeys(p.resolve() for p in (*confinement.hidden, state_dir))),
        )
        box.workspaces.mkdir(parents=True, exist_ok=True)
        return sandbox.sandboxed(box, argv)
    except sandbox.SandboxRefused as exc:
        raise DaemonError(str(exc)) from exc


def stop(state_dir: Path, *, grace_s: float = STOP_GRACE_S) -> DaemonState | None:
    """Stop what ``start`` recorded in ``state_dir`` (and its scripted LLM); forget it."""
    state = read_state(state_dir)
    if state is None:
        return None
    stop_pid(state.pid, state.start_ticks, grace_s=grace_s)
    if state.llm_pid is not None:
        stop_pid(state.llm_pid, state.llm_start_ticks, grace_s=grace_s)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return state


def stop_pid(pid: int, ticks: int | None, *, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the process ``pid`` started at ``ticks`` (its group: SIGTERM, SIGKILL after
    ``grace_s``); False if it was not up (or the pid is now another process's)."""
    if not alive(pid, ticks):
        return False
    stop_process(pid, grace_s=grace_s)
    return True
