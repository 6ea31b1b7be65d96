"""Per-process resources of a worker, built once after fork (never at import).

One engine pool, one httpx client and one L1 cache per worker process. This is the
one place that wires the agent port to its httpx adapter and the call ledger to Postgres.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock, SystemClock
from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.opencode.call_ledger import PostgresCallLedger, record_answers_in
from shared.opencode.calls import UnrecordedAnswers
from shared.opencode.client import OpenCodeClient
from shared.opencode.daemons import DaemonPool
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef
from shared.opencode.ports import AgentClient, StructuredCalls
from shared.queue import CelerySender
from shared.service.uow import UnitOfWork


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    daemons: DaemonPool
    oc: StructuredCalls
    celery: Celery

    def uow(self, *, alone: bool = False) -> UnitOfWork:
        """One task's transaction (``alone``: no transaction, see UnitOfWork); its
        messages go to the broker after it commits."""
        return UnitOfWork(self.sessions, CelerySender(self.celery), alone=alone)

    @staticmethod
    def record_answers_in(session: Session, unrecorded: UnrecordedAnswers) -> None:
        """Write a delivery's waiting answers in the transaction of ``session`` (the
        ledger is reached here, not from the steps: see the import contracts)."""
        record_answers_in(session, unrecorded)

    def close(self) -> None:
        self.oc.close()
        for daemon in self.daemons.daemons:
            daemon.client.close()
        self.engine.dispose()


DEFAULT_POOL = 5
POOL_BESIDE_STEPS = 2
"""Connections a worker process uses besides its steps' own: the lease renewer's, and
one to spare (a webhook send, the sandbox's probe)."""
_planned: dict[str, int] = {}


def plan_pool_for(concurrency: int) -> None:
    """Size this process's database pool for ``concurrency`` steps at once (the Celery
    worker's ``-c``, told at worker start). A pool smaller than the steps that share it
    opened and closed a connection per transaction past its size: a Postgres backend
    forked and authenticated each time (about 200 of them per 300 runs of the bench's
    think phase on an 8-thread worker with the old fixed 5). Connections are opened
    lazily, so a larger bound costs nothing until used."""
    _planned["size"] = max(DEFAULT_POOL, concurrency + POOL_BESIDE_STEPS)


def pool_size() -> int:
    return _planned.get("size", DEFAULT_POOL)


def build_runtime(settings: Settings, celery: Celery, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    engine = make_engine(
        settings.database_url, pool_size=pool_size(), ping_idle_s=settings.db_ping_idle_s
    )
    sessions = make_session_factory(engine)
    timeout_s = settings.oc_timeout_ms / 1000
    clients: dict[str, AgentClient] = {
        url: OpenCodeClient(
            url,
            timeout_s=timeout_s,
            username=settings.oc_username,
            password=settings.oc_password,
            max_answer_bytes=settings.max_answer_bytes,
        )
        for url in settings.oc_base_urls
    }
    daemons = DaemonPool(clients, clock)
    oc = ExactlyOnceCalls(
        daemons,
        PostgresCallLedger(sessions, settings.call_estimate()),
        clock,
        model=ModelRef(settings.oc_provider_id, settings.oc_model_id),
        timeout_s=timeout_s,
        keep_sessions=settings.oc_keep_sessions,
        async_calls=settings.oc_async,
    )
    return Runtime(settings, engine, sessions, clock, daemons, oc, celery)


_lock = threading.Lock()
_current: Runtime | None = None


def runtime(celery: Celery) -> Runtime:
    """This process's runtime, built on first use from the environment."""
    global _current
    with _lock:
        if _current is None:
            _current = build_runtime(Settings.from_env(), celery)
        return _current


def reset_runtime() -> None:
    """Forget the parent's resources in a freshly forked child."""
    global _current
    with _lock:
        _current = None
