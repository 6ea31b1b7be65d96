"""Several daemons behind one deployment: which one a new call goes to, and which one a
recorded call lives on.

A new call is spread by rendezvous hashing of its run over the daemons (each run has a
stable first choice, and removing a daemon moves only its own runs): every call of a
run goes to the daemon that already knows its worktree (a daemon pays about 2 s of
CPU and 50-75 MB to open a directory it has not seen, measured with opencode serve
1.18.33, and keeps them after the sessions are deleted); a daemon
that refused a connection is passed over for ``down_for_s`` (the health check is the
work itself: a session that cannot be created sent nothing, so the next daemon is
tried for the same call). A recorded call is always followed up (collected, aborted,
deleted, inspected) on the daemon its ledger row names.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from shared.clock import Clock
from shared.domain.step_outcome import RuleRefusal
from shared.opencode.ports import AgentClient
from shared.opencode.turn_inspection import TurnInspector

DOWN_FOR_S = 10.0
"""How long a daemon that refused a connection is passed over for new calls."""


@dataclass(frozen=True)
class Daemon:
    """One daemon: its base URL (as the ledger records it), client and turn reader."""

    url: str
    client: AgentClient
    turns: TurnInspector


class UnknownDaemon(RuleRefusal):
    """A ledger row names a daemon this process is not configured for: fail closed (the
    call's session cannot be collected, aborted or inspected from here)."""

    rule = "daemon_configured"


class DaemonPool:
    """The daemons a worker may send calls to."""

    def __init__(
        self, clients: Mapping[str, AgentClient], clock: Clock, *, down_for_s: float = DOWN_FOR_S
    ) -> None:
        if not clients:
            raise ValueError("a daemon pool needs at least one daemon")
        self.daemons = [Daemon(url, c, TurnInspector(c)) for url, c in clients.items()]
        self._by_url = {d.url: d for d in self.daemons}
        self.clock = clock
        self.down_for_s = down_for_s
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def first(self) -> Daemon:
        return self.daemons[0]

    def order(self, key: str) -> list[Daemon]:
        """The daemons to try for a new call of ``key`` (its run): by rendezvous score,
        those passed over last."""
        now = self.clock.monotonic()
        with self._lock:
            down = {url for url, until in self._down_until.items() if until > now}
        ranked = sorted(self.daemons, key=lambda d: _score(key, d.url), reverse=True)
        return [d for d in ranked if d.url not in down] + [d for d in ranked if d.url in down]

    def of(self, url: str | None) -> Daemon:
        """The daemon a recorded call lives on (rows from before daemons were recorded:
        the first one, the only daemon there was)."""
        if url is None:
            return self.first
        found = self._by_url.get(url)
        if found is None:
            configured = ", ".join(self._by_url)
            raise UnknownDaemon(
                f"daemon_configured: the call's daemon {url} is not in OC_BASE_URL"
                f" ({configured}): its session cannot be reached from this worker"
            )
        return found

    def mark_down(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = self.clock.monotonic() + self.down_for_s

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.turns.close()


def _score(key: str, url: str) -> int:
    digest = hashlib.sha256(f"{url}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
