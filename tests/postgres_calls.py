"""The exactly-once call protocol on the real Postgres ledger, as the tests that need a
real ledger (and a real or stand-in daemon) build it."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock, SystemClock
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.exactly_once import CLAIM_GRACE_S, ExactlyOnceCalls
from shared.opencode.messages import ModelRef
from shared.opencode.ports import AgentClient

SCRIPTED = ModelRef("kodo", "kodo-scripted")
"""The model oc-compat's scripted LLM answers as."""


def calls_on_postgres(
    client: AgentClient,
    sessions: sessionmaker[Session],
    *,
    timeout_s: float,
    model: ModelRef = SCRIPTED,
    clock: Clock | None = None,
    claim_grace_s: float = CLAIM_GRACE_S,
    keep_sessions: bool = False,
) -> ExactlyOnceCalls:
    """Calls over ``client`` recorded in the ledger of ``sessions``, with a fresh L1 cache;
    on the system clock unless ``clock`` is given."""
    return ExactlyOnceCalls(
        client,
        PostgresCallLedger(sessions),
        clock if clock is not None else SystemClock(),
        model=model,
        timeout_s=timeout_s,
        claim_grace_s=claim_grace_s,
        keep_sessions=keep_sessions,
    )
