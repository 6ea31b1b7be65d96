"""Where the CLI's commands find the stack: flags, then the environment, then ``kodo up``.

An explicit flag or variable always wins; the state file written by ``kodo up``
fills only what is unset, so ``kodo up && kodo doctor`` needs no exports while a
CI job pointing ``DATABASE_URL`` elsewhere is never overridden behind its back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from services.cli import upstate
from shared.config import ConfigError, Settings

DEFAULT_API_URL = "http://127.0.0.1:8000"

F = TypeVar("F", bound=Callable[..., Any])


def home_option(func: F) -> F:
    """``--home``: where ``up.json`` lives (tests and parallel checkouts use their own)."""
    option = click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="KODO_HOME",
        help="Directory of kodo's state files (default: <checkout>/.kodo; env KODO_HOME).",
    )
    decorated: F = option(func)
    return decorated


def stack_env(home: Path | None) -> dict[str, str]:
    """The process environment with the ``kodo up`` stack's URLs filled in where unset."""
    env = dict(os.environ)
    state = upstate.load_quietly(home)
    if state is not None:
        env.setdefault("DATABASE_URL", state.database_url)
        env.setdefault("REDIS_URL", state.redis_url)
        env.setdefault("OC_BASE_URL", state.oc_url)
    return env


def settings_for(home: Path | None) -> Settings:
    try:
        return Settings.from_env(stack_env(home))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def api_url_for(explicit: str | None, home: Path | None) -> str:
    """``--api-url``/``KODO_API_URL`` (click passes either as ``explicit``), else ``kodo up``'s."""
    if explicit:
        return explicit.rstrip("/")
    state = upstate.load_quietly(home)
    if state is not None and state.api_url:
        return state.api_url
    return DEFAULT_API_URL


TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret
"""Where ``kodo up`` keeps the local admin token it made (mode 0600), beside up.json."""


def token_for(explicit: str | None, home: Path | None) -> str | None:
    """``--token``/``KODO_API_TOKEN``, else the local admin token ``kodo up`` made."""
    if explicit:
        return explicit
    path = (home or upstate.default_home()) / TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def save_local_token(token: str, home: Path | None) -> Path:
    path = (home or upstate.default_home()) / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return path
