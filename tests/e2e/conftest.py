"""What every e2e module drives a whole local kodo with (real oc-compat server, worker, beat,
collector and API processes): the user's HTTP calls and a sample repository per test.

The stack itself is ``shared_stack/``'s, one for all its modules; a module that must
configure its processes differently starts a ``stack`` of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.kodo_procs import Stack, issue_token
from devstack.sample_repo import create_sample_repo

E2E_REDIS_DB = 13
TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}


def _with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


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


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    client = Api(stack)
    yield client
    client.http.close()


@pytest.fixture
def sample_repo(stack: Stack, tmp_path: Path) -> Path:
    return create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / tmp_path.name)
