"""Telling the daemon's configuration errors from its internal failures (pure).

``opencode serve`` 1.18.33 answers a prompt naming an unknown model, provider or
agent with HTTP 500 ``UnknownError`` "Unexpected server error. Check server logs for
details." (captured in tests/fixtures/opencode), the very answer it gives for any
internal failure; only the random ``ref`` differs. Name and message are therefore
necessary but not sufficient: a 500 that matches them is terminal only when the
daemon's own lists (``GET /agent``, ``GET /config/providers``) lack what we asked
for. Every other 500 stays transient, so the attempt loop retries it with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.opencode.errors import (
    CONFIG_HINT,
    OpenCodeConfigError,
    OpenCodeError,
    TurnUnanswered,
)

DAEMON_UNEXPECTED = "Unexpected server error. Check server logs for details."
"""The daemon's message for an unknown model, provider or agent (and internal failures)."""

MAX_LISTED = 20
"""How many of the daemon's agents or models a diagnostic names."""


def may_be_configuration(error: OpenCodeError) -> bool:
    """Is this the 500 the daemon gives an unknown agent or model (worth a look), or a
    sent turn that ended unanswered (what ``prompt_async`` gives them)?"""
    if isinstance(error, TurnUnanswered):
        return True
    return (
        error.status == 500
        and error.name == "UnknownError"
        and error.data.get("message") == DAEMON_UNEXPECTED
    )


@dataclass(frozen=True)
class DaemonCatalogue:
    """The agents and (provider, model) pairs a daemon offers."""

    agents: frozenset[str]
    models: frozenset[tuple[str, str]]

    @classmethod
    def from_json(cls, agents: object, providers: object) -> DaemonCatalogue | None:
        """Read ``GET /agent`` and ``GET /config/providers``; ``None`` for any other shape."""
        if not isinstance(agents, list) or not isinstance(providers, dict):
            return None
        names = [a.get("name") if isinstance(a, dict) else None for a in agents]
        listed = providers.get("providers")
        if not isinstance(listed, list):
            return None
        models: set[tuple[str, str]] = set()
        for provider in listed:
            pid = provider.get("id") if isinstance(provider, dict) else None
            offered = provider.get("models") if isinstance(provider, dict) else None
            if not isinstance(pid, str) or not isinstance(offered, dict):
                return None
            models.update((pid, str(mid)) for mid in offered)
        if not all(isinstance(n, str) for n in names):
            return None
        return cls(frozenset(n for n in names if isinstance(n, str)), frozenset(models))


def _listed(items: list[str]) -> str:
    shown = [item[:80] for item in sorted(items)[:MAX_LISTED]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if shown else "none"


def diagnose_server_error(
    error: OpenCodeError, agent: str, model: tuple[str, str], catalogue: DaemonCatalogue
) -> OpenCodeError:
    """A configuration error naming what the daemon lacks, or ``error`` unchanged."""
    if not may_be_configuration(error):
        return error
    missing: list[str] = []
    if agent not in catalogue.agents:
        missing.append(
            f"the daemon has no agent {agent!r} (it has: {_listed(list(catalogue.agents))})"
        )
    if model not in catalogue.models:
        offered = [f"{p}/{m}" for p, m in catalogue.models]
        missing.append(
            f"the daemon has no model '{model[0]}/{model[1]}' (it has: {_listed(offered)})"
        )
    if not missing:
        return error
    return OpenCodeConfigError(
        f"{error.message}: {'; '.join(missing)}: {CONFIG_HINT}",
        status=error.status,
        name=error.name,
        data=error.data,
    )
