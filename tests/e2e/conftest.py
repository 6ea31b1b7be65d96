"""What every e2e module drives a whole local kodo with (real oc-compat server, worker, beat,
collector and API processes): the stack, the user's HTTP calls and a sample repository
per test.

``shared_stack/``'s modules share one stack; a module that must configure its
processes differently starts a ``stack`` of its own (:func:`e2e_stack` with its env)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, text

from devstack.kodo_procs import (
    Stack,
    issue_token,
    ready_worker,
    start_api,
    start_beat,
    start_collector,
    start_oc_compat,
    start_together,
    start_worker,
)
from devstack.sample_repo import create_sample_repo

E2E_REDIS_DB = 13
TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}


def _with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


@contextmanager
def e2e_stack(
    database_url: str, redis_url: str, root: Path, extra_env: dict[str, str]
) -> Iterator[Stack]:
    """oc-compat, then worker, beat, collector and API together, on the session's
    database and this suite's Redis db (flushed first), files under ``root``; stopped
    at the end. ``extra_env``: what the caller's modules configure besides."""
    broker = _with_db(redis_url, E2E_REDIS_DB)
    redis.Redis.from_url(broker).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "KODO_REPO_ROOTS": str(root / "repos"),
        "KODO_WORKSPACE_DIR": str(root / "workspaces"),
        "RANDOM_SEED": "7",
        "APPROVAL_POLL_S": "0.5",
        "OC_TIMEOUT_MS": "20000",
        **extra_env,
    }
    s = Stack(env=env, log_dir=root / "logs")
    try:
        start_oc_compat(s, seed=7)
        start_together(
            {
                "worker": lambda: ready_worker(start_worker(s)),
                "beat": lambda: start_beat(s),
                "collector": lambda: start_collector(s),
                "api": lambda: start_api(s),
            }
        )
        yield s
    finally:
        s.stop()


class Api:
    """A tiny HTTP client for the tests: the same calls a user makes."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        token = issue_token(stack.env["DATABASE_URL"], "e2e-admin", "admin")
        self.http = httpx.Client(
            base_url=stack.api_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}
        )

    def bearer(self, name: str, role: str) -> dict[str, str]:
        """Headers authenticating as a fresh token for ``name`` with ``role``."""
        token = issue_token(self.stack.env["DATABASE_URL"], name, role)
        return {"Authorization": f"Bearer {token}"}

    def submit(self, repo: Path, goal: str) -> str:
        reply = self.http.post("/intents", json={"repo": str(repo), "goal": goal})
        assert reply.status_code == 201, reply.text
        intent_id: str = reply.json()["intentId"]
        started = self.http.post(f"/intents/{intent_id}/run")
        assert started.status_code == 202, started.text
        assert started.json()["runId"] == intent_id
        return intent_id

    def approve(self, run_id: str) -> dict[str, Any]:
        """Wait for the run's plan, approve its digest as an approver (alice); the run as
        it waited."""
        plan = self.wait_for(run_id, {"waiting_input"})
        approved = self.http.post(
            f"/runs/{run_id}/approve-plan",
            json={"plan_sha256": plan["planSha256"]},
            headers=self.bearer("alice", "approver"),
        )
        assert approved.status_code == 200, approved.text
        return plan

    def run(self, run_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/runs/{run_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def wait_for(self, run_id: str, statuses: set[str], deadline_s: float = 60.0) -> dict[str, Any]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if run["status"] in TERMINAL:
                pytest.fail(f"run ended {run['status']} ({run.get('error')}), wanted {statuses}")
            time.sleep(0.1)
        logs = "\n".join(f"== {p.name}\n{p.log_tail(30)}" for p in self.stack.procs)
        pytest.fail(f"run {run_id} still {self.run(run_id)['status']}, wanted {statuses}\n{logs}")


def provider_calls(engine: Engine, run_id: str) -> list[tuple[str, int, str]]:
    """The run's ledger rows in the order claimed: (step, attempt, status)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT step_id, attempt, status FROM app.opencode_calls"
                " WHERE run_id = :r ORDER BY id"
            ),
            {"r": run_id},
        ).all()
    return [(r.step_id, r.attempt, r.status) for r in rows]


def branch_log(repo: Path, run_id: str) -> list[str]:
    """The subjects of the commits the run's branch holds beyond main."""
    out = subprocess.run(
        ["git", "log", "--format=%s", f"main..kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.http.close()


@pytest.fixture
def sample_repo(stack: Stack, tmp_path: Path) -> Path:
    return create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / tmp_path.name)
