"""Two backends for one suite: the real ``opencode serve`` 1.18.33 and our compat server.

The real daemon runs against kodo's scripted LLM (:mod:`standins.scripted_llm`) with
the same seed as the compat server, so both give the same answers and every case
can assert the same things of both. It runs in its bubblewrap sandbox, as ``kodo oc
up`` runs it: only the session's ``workspaces`` folder is writable; ``repos`` (the
source repositories of the worktrees there) is not in its view at all. The npm package
is installed once into the cache (``KODO_OPENCODE_CACHE``); if npm or the registry
fails, the suite fails loudly: a conformance suite that skips silently proves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.kodo_procs import Stack, start_oc_compat
from devstack.oc_daemon import daemon, install
from devstack.oc_daemon.config import Prices, ProviderKind, ProviderSpec, scripted_provider
from devstack.oc_daemon.daemon import Confinement, DaemonState
from devstack.oc_daemon.install import InstallError
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import free_port
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.opencode.client import ModelRef, OpenCodeClient
from shared.opencode.tools import permission_rules, tools_map
from standins.scripted_llm import running_llm

SEED = 5
PASSWORD = "conformance-secret"  # noqa: S105 - a throwaway daemon on loopback
MODEL = ModelRef("kodo", "kodo-scripted")
BACKENDS = ["real", "compat"]


@dataclass(frozen=True)
class Backend:
    """One server to conform: its URL, credentials and a repository it has already seen."""

    name: str
    url: str
    password: str
    repo: Path

    def client(self, timeout_s: float = 30.0) -> OpenCodeClient:
        return OpenCodeClient(self.url, timeout_s=timeout_s, password=self.password)


@pytest.fixture(scope="session")
def opencode_binary() -> Path:
    try:
        return install.install()
    except InstallError as exc:
        pytest.fail(
            "CONFORMANCE CANNOT RUN: the real OpenCode could not be installed"
            f" (npm registry unreachable?): {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def scripted_llm() -> Iterator[str]:
    with running_llm(seed=SEED) as url:
        yield url


@dataclass(frozen=True)
class SandboxDirs:
    workspaces: Path  # writable by the daemon
    repos: Path  # not in its view


@pytest.fixture(scope="session")
def sandbox_dirs(tmp_path_factory: pytest.TempPathFactory) -> SandboxDirs:
    return SandboxDirs(tmp_path_factory.mktemp("workspaces"), tmp_path_factory.mktemp("repos"))


@contextmanager
def scripted_daemon(
    binary: Path, llm_url: str, state_dir: Path, dirs: SandboxDirs
) -> Iterator[DaemonState]:
    """``opencode serve`` over the scripted LLM in the suite's sandbox, stopped after."""
    state = daemon.start(
        binary,
        state_dir=state_dir,
        port=free_port(),
        provider=scripted_provider(llm_url),
        password=PASSWORD,
        confinement=Confinement(dirs.workspaces),
    )
    try:
        yield state
    finally:
        daemon.stop(state_dir)


@pytest.fixture(scope="session")
def real_daemon(
    opencode_binary: Path,
    scripted_llm: str,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_dirs: SandboxDirs,
) -> Iterator[DaemonState]:
    state_dir = tmp_path_factory.mktemp("opencode-state")
    with scripted_daemon(opencode_binary, scripted_llm, state_dir, sandbox_dirs) as state:
        yield state


KEY_VAR = "KODO_CONFORMANCE_PROVIDER_KEY"
KEY = "sk-kodo-conformance-key-7f3e9a"  # what the Messages-API scripted LLM insists on
PRICES = Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
ANTHROPIC = ModelRef("anthropic", "claude-kodo-scripted")


def key_env() -> dict[str, str]:
    return {**os.environ, KEY_VAR: KEY}


@pytest.fixture(scope="session")
def messages_llm() -> Iterator[str]:
    """A scripted LLM (same seed as the suite's) that refuses requests without KEY."""
    with running_llm(seed=SEED, api_key=KEY) as url:
        yield url


@pytest.fixture(scope="session")
def anthropic_daemon(
    opencode_binary: Path,
    messages_llm: str,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_dirs: SandboxDirs,
) -> Iterator[DaemonState]:
    """The real daemon's ``@ai-sdk/anthropic`` provider against the scripted LLM, at
    PRICES, the key from KEY_VAR, in the same sandbox as the suite's daemon."""
    state_dir = tmp_path_factory.mktemp("opencode-anthropic")
    spec = ProviderSpec(
        kind=ProviderKind.ANTHROPIC,
        model_id=ANTHROPIC.model_id,
        prices=PRICES,
        base_url=messages_llm,
        api_key_env=KEY_VAR,
    )
    state = daemon.start(
        opencode_binary,
        state_dir=state_dir,
        port=free_port(),
        provider=spec,
        password=PASSWORD,
        env=key_env(),
        confinement=Confinement(sandbox_dirs.workspaces),
    )
    try:
        yield state
    finally:
        daemon.stop(state_dir)


@pytest.fixture(scope="session")
def anthropic_repo(sandbox_dirs: SandboxDirs) -> Path:
    return create_sample_repo(sandbox_dirs.workspaces / "repo-anthropic" / "calc")


@pytest.fixture(scope="session")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kodo oc-compat`` as a process, started as ``kodo up`` starts it (its gevent
    server, not the in-process threaded one), so the suite proves what is deployed."""
    stack = Stack(env=dict(os.environ), log_dir=tmp_path_factory.mktemp("oc-compat-logs"))
    start_oc_compat(stack, seed=SEED)
    try:
        yield stack.oc_url
    finally:
        stack.stop()


def warm(url: str, password: str, repo: Path, model: ModelRef = MODEL) -> None:
    """One plan prompt, so the daemon's per-directory bootstrap (1-3 s) is behind us."""
    with OpenCodeClient(url, timeout_s=60.0, password=password) as client:
        session = client.create_session(
            directory=str(repo),
            title="kodo conformance warm-up",
            permission=permission_rules("plan"),
        )
        client.prompt(
            str(session["id"]),
            directory=str(repo),
            agent="plan",
            model=model,
            text="Warm up on README.md",
            tools=tools_map("plan"),
            format={"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1},
        )


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Backend]:
    """Backends started so far (each on first use), keyed by name."""
    return {}


def backend_of(
    request: pytest.FixtureRequest, made: dict[str, Backend], daemon: str, sandbox: str
) -> Backend:
    """The backend ``request.param`` names, made on first use: the real daemon the
    fixture ``daemon`` starts, its repository in the workspaces of the fixture
    ``sandbox``; or oc-compat. Warmed once."""
    name: str = request.param
    if name not in made:
        if name == "real":
            state: DaemonState = request.getfixturevalue(daemon)
            url, password = state.url, state.password
            dirs: SandboxDirs = request.getfixturevalue(sandbox)
            repo = create_sample_repo(dirs.workspaces / "calc")
        else:
            url, password = request.getfixturevalue("compat_server"), ""
            tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
            repo = create_sample_repo(tmp.mktemp(f"repo-{name}") / "calc")
        warm(url, password, repo)
        made[name] = Backend(name, url, password, repo)
    return made[name]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> Backend:
    return backend_of(request, backends, "real_daemon", "sandbox_dirs")
