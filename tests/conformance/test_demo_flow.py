"""The whole demo flow (submit, plan, approve, patch, verify) with OC_BASE_URL at each backend.

Real worker, beat and API processes, as in tests/e2e, but the provider is the real
``opencode serve`` (or, for comparison, the compat server): what a user gets by
pointing OC_BASE_URL/OC_PASSWORD at a daemon, with no code change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devstack.kodo_procs import (
    Stack,
    issue_token,
    start_api,
    start_beat,
    start_worker,
    wait_worker_ready,
)
from devstack.sample_repo import create_sample_repo
from tests.conformance.conftest import SEED, Backend, SandboxDirs

pytestmark = pytest.mark.conformance

BROKER_DB = 11
TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}


def _broker(redis_url: str) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return f"{base}/{BROKER_DB}"


@pytest.fixture
def places(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """The stack's repository root and workspaces: on the real backend, inside what the
    sandboxed daemon sees (repositories read-only, workspaces writable)."""
    if backend.name != "real":
        return tmp_path / "repos", tmp_path / "workspaces"
    dirs: SandboxDirs = request.getfixturevalue("sandbox_dirs")
    return dirs.repos / tmp_path.name, dirs.workspaces / tmp_path.name


@pytest.fixture
def stack(
    backend: Backend,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    places: tuple[Path, Path],
) -> Iterator[Stack]:
    broker = _broker(redis_url)
    redis.Redis.from_url(broker).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker,
        "OC_BASE_URL": backend.url,
        "OC_PASSWORD": backend.password,
        "OC_TIMEOUT_MS": "30000",
        "KODO_REPO_ROOTS": str(places[0]),
        "KODO_WORKSPACE_DIR": str(places[1]),
        "RANDOM_SEED": str(SEED),
        "APPROVAL_POLL_S": "0.5",
    }
    started = Stack(env=env, log_dir=tmp_path / "logs")
    try:
        wait_worker_ready(start_worker(started))
        start_beat(started)
        start_api(started)
        yield started
    finally:
        started.stop()


def _wait(http: httpx.Client, stack: Stack, run_id: str, wanted: str) -> dict[str, Any]:
    end = time.monotonic() + 90
    run: dict[str, Any] = {}
    while time.monotonic() < end:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] == wanted:
            return run
        if run["status"] in TERMINAL:
            break
        time.sleep(0.2)
    logs = "\n".join(f"== {p.name}\n{p.log_tail(40)}" for p in stack.procs)
    pytest.fail(f"run is {run.get('status')} ({run.get('error')}), wanted {wanted}\n{logs}")


def test_an_intent_is_planned_approved_patched_and_verified(stack: Stack) -> None:
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "calc")
    token = issue_token(stack.env["DATABASE_URL"], "conformance", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    approver = issue_token(stack.env["DATABASE_URL"], "conformance-approver", "approver")
    with httpx.Client(base_url=stack.api_url, timeout=10.0, headers=auth) as http:
        intent = http.post(
            "/intents", json={"repo": str(repo), "goal": "Add a multiply function to calc.py"}
        )
        assert intent.status_code == 201, intent.text
        run_id = intent.json()["intentId"]
        assert http.post(f"/intents/{run_id}/run").status_code == 202
        _wait(http, stack, run_id, "waiting_input")
        card = http.get(f"/runs/{run_id}/plan").json()
        assert card["plan"]["files"][0]["path"] == "calc.py"
        approved = http.post(
            f"/runs/{run_id}/approve-plan",
            json={"plan_sha256": card["planSha256"]},
            headers={"Authorization": f"Bearer {approver}"},  # not the submitter
        )
        assert approved.status_code == 200, approved.text
        run = _wait(http, stack, run_id, "succeeded")
        calls = http.get(f"/runs/{run_id}/calls").json()
    assert run["branch"] == f"kodo/{run_id}"
    rows = calls if isinstance(calls, list) else calls.get("calls", [])
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len(rows) >= 3
