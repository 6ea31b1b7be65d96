"""A request that finds the API's database pool exhausted is a 503 with Retry-After.

A real API process (one gevent worker, a pool of one connection, a one-second wait) on
the test database: a cancel blocked on a run's row lock (held here, in a transaction of
the test's own) keeps the pool's only connection, so the next request cannot get one.
It is refused with the rule named, never a 500, and answered once the lock is gone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import Stack
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork
from tests.factories import RunFactory

from .conftest import api_process

pytestmark = pytest.mark.integration

WAITING_ON_A_LOCK = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.fixture(scope="module")
def tiny_pool(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with api_process(
        tmp_path_factory.mktemp("dbbusy"),
        database_url,
        redis_url,
        KODO_REDIS_KEY_PREFIX=f"kodo-test-{uuid.uuid4().hex[:12]}",
        KODO_API_WORKERS="1",
        KODO_API_DB_POOL="1",
        KODO_API_DB_OVERFLOW="0",
        KODO_API_DB_WAIT_S="1",
    ) as stack:
        yield stack


def _wait_for_lock_waiter(engine: Engine, deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    with engine.connect() as conn:
        while conn.execute(WAITING_ON_A_LOCK).scalar_one() == 0:
            assert time.monotonic() < end, "the API's cancel never waited on the row lock"
            time.sleep(0.05)
            conn.rollback()


def test_a_request_finding_the_pool_exhausted_is_a_503_naming_the_rule(
    tiny_pool: Stack, engine: Engine, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(waiting_input=True)
    db.commit()
    with UnitOfWork(sessions) as uow:
        token = create_token(uow, "dora", Role.ADMIN)
    headers = {"Authorization": f"Bearer {token}"}
    cancelled: list[httpx.Response] = []

    with httpx.Client(base_url=tiny_pool.api_url, headers=headers, timeout=30) as http:
        holder = engine.connect()
        try:
            holder.execute(text("SELECT 1 FROM app.runs WHERE id = :id FOR UPDATE"), {"id": run.id})
            canceller = threading.Thread(
                target=lambda: cancelled.append(http.post(f"/runs/{run.id}/cancel"))
            )
            canceller.start()
            _wait_for_lock_waiter(engine)  # the API's only connection now waits on the lock

            refused = http.get(f"/runs/{run.id}")
        finally:
            holder.rollback()
            holder.close()
        canceller.join(timeout=30)
        answered = http.get(f"/runs/{run.id}")

    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"].isdigit()
    error = refused.json()["error"]
    assert error["code"] == "database_busy"
    assert error["details"] == {"rule": ["db_pool_wait"]}
    assert "KODO_API_DB_WAIT_S" in error["message"]
    assert [r.status_code for r in cancelled] == [200], [r.text for r in cancelled]
    assert answered.status_code == 200
    assert answered.json()["status"] == "cancelled"
    log = tiny_pool.proc("api").log_tail(400)
    assert "database pool exhausted" in log
    assert "unhandled error" not in log


@pytest.fixture(scope="module")
def never_pinged(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An API whose pooled connection is never pinged, tagged so the test can drop it."""
    sep = "&" if "?" in database_url else "?"
    with api_process(
        tmp_path_factory.mktemp("dbgone"),
        f"{database_url}{sep}application_name={DROPPED}",
        redis_url,
        KODO_REDIS_KEY_PREFIX=f"kodo-test-{uuid.uuid4().hex[:12]}",
        KODO_API_WORKERS="1",
        KODO_API_DB_POOL="1",
        KODO_API_DB_OVERFLOW="0",
        KODO_DB_PING_IDLE_S="3600",
    ) as stack:
        yield stack


DROPPED = "kodo-test-dropped-api"


def test_a_database_connection_lost_mid_request_is_a_503_then_the_pool_recovers(
    never_pinged: Stack, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with UnitOfWork(sessions) as uow:
        token = create_token(uow, "reader", Role.SUBMITTER)
    headers = {"Authorization": f"Bearer {token}"}
    missing = f"/runs/{uuid.uuid4()}"
    with httpx.Client(base_url=never_pinged.api_url, headers=headers, timeout=10) as http:
        assert http.get(missing).status_code == 404  # the pool's connection is open
        with engine.connect() as conn:
            dropped = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": DROPPED},
            ).scalar_one()
        assert dropped == 1
        lost = http.get(missing)
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"]["code"] == "database_unavailable"
        assert lost.headers["Retry-After"].isdigit()
        assert http.get(missing).status_code == 404  # a fresh connection
