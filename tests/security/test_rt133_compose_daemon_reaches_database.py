"""Red-team helper-133: under compose, the real OpenCode daemon's container reaches
kodo's Postgres with the password written in the file, and Redis with none.

``docker-compose.yml`` declares no networks, so every service is on the project's default
network: the ``opencode`` container (the profile that runs the real ``opencode serve``
whose tools the agents drive) resolves ``postgres`` and ``redis`` like the worker does.
Its sandbox (``kodo oc serve``) hides kodo's state files, but not the network. Postgres's
password is the literal ``postgres`` (``POSTGRES_PASSWORD: postgres``, accepted by
``tests/unit/test_compose.py`` "whose server is on the compose network only", and that
network is the daemon's too), and Redis runs without ``--requirepass``. An escaped tool
call (the threat ``tests/conformance/test_daemon_sandbox.py`` models) therefore logs in
as kodo's database superuser at ``postgres:5432`` and writes kodo's Celery queue at
``redis:6379``.

The safe outcome: the daemon's container shares no network with Postgres or Redis (it
needs the LLM and the kodo services that call it, not the stores), or each store requires
a credential that comes from the operator, not from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.security

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DAEMON = "opencode"  # the real daemon: agents' tool calls run in it
STORES = ("postgres", "redis")


def _services() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    services = loaded["services"]
    assert isinstance(services, dict)
    return services


def _networks(service: dict[str, Any]) -> set[str]:
    declared = service.get("networks")
    if declared is None:
        return {"default"}
    return set(declared)


def _operator_credential(name: str, service: dict[str, Any]) -> bool:
    """Whether the store refuses a client without a secret the file does not hold."""
    if name == "postgres":
        password = str(service.get("environment", {}).get("POSTGRES_PASSWORD", ""))
        return password.startswith("${")
    command = " ".join(map(str, service.get("command") or []))
    return "--requirepass ${" in command or "--requirepass $$" in command


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (session 61): compose's opencode service shares the stores' network, which "
        "take a known password or none"
    ),
)
def test_the_daemons_container_cannot_reach_an_open_store() -> None:
    services = _services()
    daemon = services[DAEMON]
    reachable = {
        name: sorted(_networks(daemon) & _networks(services[name]))
        for name in STORES
        if (_networks(daemon) & _networks(services[name]))
        and not _operator_credential(name, services[name])
    }
    assert not reachable, (
        f"the {DAEMON} container shares networks {reachable} with stores that need no"
        " secret from the operator (POSTGRES_PASSWORD literal, Redis without --requirepass)"
    )
