"""Fixtures for in-process step tests: a worker runtime on real services."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from devstack.sample_repo import create_sample_repo
from services.worker.runtime import Runtime, build_runtime
from services.worker.steps.base import StepBody, run_step
from shared.clock import Clock
from shared.config import Settings
from shared.db.models import Run
from shared.domain.run_machine import StepId
from shared.opencode.client import OpenCodeClient
from shared.queue import make_celery
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import approve_plan, start_run, submit_intent
from shared.service.uow import UnitOfWork
from standins.oc_compat import running_server
from tests.waiting import wait_until

BROKER_DB = 12


@pytest.fixture(scope="module")
def oc_url() -> Iterator[str]:
    with running_server(seed=5) as url:
        yield url


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_rt(
    oc_url: str, database_url: str, redis_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> Iterator[RuntimeFactory]:
    broker = f"{redis_url.rsplit('/', 1)[0]}/{BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    httpx.post(f"{oc_url}/__kodo/reset")
    made: list[Runtime] = []

    def make(clock: Clock | None = None, **overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": broker,
            "oc_base_url": oc_url,
            "oc_timeout_ms": 10000,
            # In-process steps block on their calls here (OC_ASYNC=0); the parked,
            # collected path has its own tests (test_async_calls.py) and runs in every
            # end-to-end test.
            "oc_async": False,
            # A failed verification ends the run here, as each step test expects; the
            # repair route has its own tests (test_repair_route.py, e2e's test_repair.py).
            "max_repairs": 0,
            "repo_roots": (tmp_path,),
            "workspace_dir": tmp_path / "ws",
        }
        settings = Settings(**{**values, **overrides})
        made.append(build_runtime(settings, make_celery(settings), clock))
        return made[-1]

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def async_rt(make_rt: RuntimeFactory) -> Runtime:
    """A runtime whose provider calls are sent with prompt_async and parked."""
    return make_rt(oc_async=True)


@pytest.fixture
def client(oc_url: str) -> Iterator[OpenCodeClient]:
    """kodo's own client of the module's oc-compat server."""
    with OpenCodeClient(oc_url, timeout_s=10) as c:
        yield c


@pytest.fixture
def rt(make_rt: RuntimeFactory) -> Runtime:
    return make_rt()


def uow(rt: Runtime, sender: InMemorySender | None = None, *, alone: bool = False) -> UnitOfWork:
    """A unit of work whose messages stay in memory: these tests run the steps in-process."""
    return UnitOfWork(rt.sessions, sender if sender is not None else InMemorySender(), alone=alone)


def new_run(rt: Runtime, repo: Path, goal: str = "Add multiply to calc.py") -> str:
    with uow(rt) as work:
        intent = submit_intent(work, repo=repo, goal=goal, base_ref="HEAD", submitted_by="t")
        start_run(work, intent.id, app_version="test", now=rt.clock.now())
        return intent.id


def step_in_background(
    rt: Runtime, step: StepId, run_id: str, body: StepBody
) -> tuple[threading.Thread, list[str]]:
    """``run_step`` on a started thread, and the list its outcome is appended to (join first)."""
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(run_step(rt, step, run_id, body)))
    worker.start()
    return worker, outcome


def read_run(rt: Runtime, run_id: str) -> Run:
    """The run's row as the database has it now, detached from its session."""
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        s.expunge(run)
        return run


def prompts_at_server(rt: Runtime) -> int:
    count: int = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()["prompts"]
    return count


def commits_on_branch(repo: Path, run_id: str) -> int:
    out = subprocess.run(
        ["git", "rev-list", "--count", f"main..kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def approve(rt: Runtime, run_id: str) -> None:
    sender = InMemorySender()
    with uow(rt, sender) as work:
        approve_plan(work, run_id, approver="alice", now=rt.clock.now())
    assert sender.sent == [RunStep(StepId.APPLY_PATCH, run_id)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_sample_repo(tmp_path / "calc")


def wait_lease_lapsed(rt: Runtime, run_id: str, step_id: StepId) -> None:
    """Until the database's clock is past the lease of ``step_id``'s checkpoint (as
    the runner judges it), so a "dead" holder's step may be taken over."""

    def lapsed() -> bool:
        with rt.sessions() as s:
            return bool(
                s.execute(
                    text(
                        "SELECT lease_expires_at < now() FROM app.step_runs"
                        " WHERE run_id = :r AND step_id = :s"
                    ),
                    {"r": run_id, "s": step_id.value},
                ).scalar_one()
            )

    wait_until(lapsed, 10, f"the lease of {step_id} to lapse")


def diagnostic(rt: Runtime, run_id: str) -> dict[str, Any]:
    """The run's diagnostic.json, parsed."""
    with rt.sessions() as s:
        body = s.execute(
            text(
                "SELECT content FROM app.artifacts WHERE run_id = :r AND name = 'diagnostic.json'"
            ),
            {"r": run_id},
        ).scalar_one()
    report: dict[str, Any] = json.loads(bytes(body))
    return report


def only_call(rt: Runtime, run_id: str) -> dict[str, object]:
    """The run's one provider call as triage reads it, with its run's reservation left
    (``run_reserved``): status, session, error, usage, what it reserved and spent."""
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT c.op_key, c.status, c.session_id, c.error_name, c.error, c.usage,"
                " c.spent_tokens, c.reserved_tokens, c.request->>'directory' AS directory,"
                " r.reserved_tokens AS run_reserved"
                " FROM app.opencode_calls c JOIN app.runs r ON r.id = c.run_id"
                " WHERE c.run_id = :r"
            ),
            {"r": run_id},
        ).mappings()
        [call] = [dict(r) for r in rows]
        return call
