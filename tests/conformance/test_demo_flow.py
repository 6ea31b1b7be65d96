"""A whole kodo run (submit, plan, approve, edits by tool calls, diff from git, verify)
with OC_BASE_URL at the real ``opencode serve`` over each provider wire, and at oc-compat.

Real worker, beat and API processes, as in tests/e2e; the provider is the real daemon in
its bubblewrap sandbox, driving kodo's scripted LLM over chat completions
(``openai-compatible``) or the Anthropic Messages API (``@ai-sdk/anthropic``), or, for
comparison, the compat server: what a user gets by pointing OC_BASE_URL/OC_PASSWORD and
OC_PROVIDER_ID/OC_MODEL_ID at a daemon, with no code change. The demo's goal must end with
a real ``multiply`` and its test, made by the agent's edit tool calls; every ledger row's
cost must be the configured prices times its tokens.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Row, create_engine, text

from devstack.kodo_procs import (
    Stack,
    issue_token,
    start_api,
    start_beat,
    start_collector,
    start_worker,
    wait_worker_ready,
)
from devstack.oc_daemon.config import SCRIPTED_PRICES, Prices
from devstack.oc_daemon.daemon import DaemonState
from devstack.sample_repo import create_sample_repo
from tests.conformance.conftest import MODEL, PRICES, SEED, SandboxDirs

pytestmark = pytest.mark.conformance

BROKER_DB = 11  # on the session's own Redis server (tests/conftest.py), flushed per test
TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}
GOAL = "Add a multiply function to calc.py with a test"


def _broker(redis_url: str) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return f"{base}/{BROKER_DB}"


@dataclass(frozen=True)
class Target:
    """A daemon to run against: where, which model, at what prices."""

    name: str
    url: str
    password: str
    provider_id: str
    model_id: str
    prices: Prices
    sandboxed: bool
    llm_url: str | None = None  # the scripted LLM behind a real daemon
    edits_before: int = 0  # edit tool calls it had answered before this test


def _llm_stats(llm_url: str) -> dict[str, Any]:
    base = llm_url.removesuffix("/v1")
    stats: dict[str, Any] = httpx.get(f"{base}/__kodo/stats", timeout=5.0).json()
    return stats


def _real(name: str, state: DaemonState, prices: Prices, llm_url: str) -> Target:
    edits = _llm_stats(llm_url)["replies"].get("tool:edit", 0)
    return Target(
        name,
        state.url,
        state.password,
        state.provider_id,
        state.model_id,
        prices,
        sandboxed=True,
        llm_url=llm_url,
        edits_before=edits,
    )


@pytest.fixture(params=["real-chat", "real-anthropic", "compat"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "real-chat":
        state = request.getfixturevalue("real_daemon")
        return _real(request.param, state, SCRIPTED_PRICES, request.getfixturevalue("scripted_llm"))
    if request.param == "real-anthropic":
        state = request.getfixturevalue("anthropic_daemon")
        return _real(request.param, state, PRICES, request.getfixturevalue("messages_llm"))
    url: str = request.getfixturevalue("compat_server")
    return Target(
        "compat", url, "", MODEL.provider_id, MODEL.model_id, SCRIPTED_PRICES, sandboxed=False
    )


@pytest.fixture
def places(target: Target, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """The stack's repository root and workspaces: for a real daemon, inside what its
    sandbox sees (repositories read-only, workspaces writable)."""
    if not target.sandboxed:
        return tmp_path / "repos", tmp_path / "workspaces"
    dirs: SandboxDirs = request.getfixturevalue("sandbox_dirs")
    return dirs.repos / tmp_path.name, dirs.workspaces / tmp_path.name


@pytest.fixture
def stack(
    target: Target,
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
        "OC_BASE_URL": target.url,
        "OC_PASSWORD": target.password,
        "OC_PROVIDER_ID": target.provider_id,
        "OC_MODEL_ID": target.model_id,
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
        start_collector(started)
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
    pytest.fail(
        f"run is {run.get('status')} ({run.get('error')}), wanted {wanted}\n"
        f"{_ledger(stack, run_id)}\n{logs}"
    )


def _ledger(stack: Stack, run_id: str) -> str:
    """The run's provider calls, one line each, for a failure's message."""
    rows = _calls_of(stack, run_id)
    return "\n".join(
        f"{r.step_id} | {r.attempt} | {r.status} | {(r.error or '')[:300]}" for r in rows
    )


def _calls_of(stack: Stack, run_id: str) -> list[Row[Any]]:
    """The run's ledger rows (app.opencode_calls), oldest first: step, attempt, outcome."""
    engine = create_engine(stack.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT step_id, attempt, status, error FROM app.opencode_calls"
                        " WHERE run_id = :id ORDER BY id"
                    ),
                    {"id": run_id},
                ).all()
            )
    finally:
        engine.dispose()


def _cost(usage: dict[str, Any], prices: Prices) -> float:
    """What OpenCode bills for a turn's tokens at ``prices`` (USD per million tokens)."""
    billed = (
        usage["input_tokens"] * prices.input
        + (usage["output_tokens"] + usage["reasoning_tokens"]) * prices.output
        + usage["cache_read_tokens"] * prices.cache_read
        + usage["cache_write_tokens"] * prices.cache_write
    )
    return billed / 1_000_000


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
    ).stdout


def test_the_demo_goal_is_planned_approved_edited_by_tools_verified_and_priced(
    stack: Stack, target: Target
) -> None:
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "calc")
    token = issue_token(stack.env["DATABASE_URL"], "conformance", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    approver = issue_token(stack.env["DATABASE_URL"], "conformance-approver", "approver")
    with httpx.Client(base_url=stack.api_url, timeout=10.0, headers=auth) as http:
        intent = http.post("/intents", json={"repo": str(repo), "goal": GOAL})
        assert intent.status_code == 201, intent.text
        run_id = intent.json()["intentId"]
        assert http.post(f"/intents/{run_id}/run").status_code == 202
        _wait(http, stack, run_id, "waiting_input")
        card = http.get(f"/runs/{run_id}/plan").json()
        assert [f["path"] for f in card["plan"]["files"]] == ["calc.py", "test_calc.py"]
        approved = http.post(
            f"/runs/{run_id}/approve-plan",
            json={"plan_sha256": card["planSha256"]},
            headers={"Authorization": f"Bearer {approver}"},  # not the submitter
        )
        assert approved.status_code == 200, approved.text
        run = _wait(http, stack, run_id, "succeeded")
    assert run["branch"] == f"kodo/{run_id}"
    diff = _git(repo, "diff", f"main...kodo/{run_id}")
    assert "+def multiply(a: int, b: int) -> int:" in diff
    assert "+    return a * b" in diff
    assert "+        self.assertEqual(multiply(3, 4), 12)" in diff
    engine = create_engine(stack.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT step_id, status, usage, response FROM app.opencode_calls"
                    " WHERE run_id = :id ORDER BY id"
                ),
                {"id": run_id},
            ).all()
            artifact = conn.execute(
                text(
                    "SELECT content, sha256 FROM app.artifacts WHERE run_id = :id"
                    " AND name = 'patch.diff'"
                ),
                {"id": run_id},
            ).one()
    finally:
        engine.dispose()
    assert [(r.step_id, r.status) for r in rows] == [
        ("CompileST", "succeeded"),
        ("ApplyPatchST", "succeeded"),
        ("DecideST", "succeeded"),
    ]
    for row in rows:
        assert row.usage["total_tokens"] > 0
        assert row.usage["cost_usd"] == pytest.approx(_cost(row.usage, target.prices), rel=1e-6)
    patch = bytes(artifact.content)
    assert patch.decode() == _git(
        repo, "diff", "--binary", "--full-index", "-M", "main", run["branch"]
    )
    assert artifact.sha256 == hashlib.sha256(patch).hexdigest()
    if target.llm_url is not None:  # the daemon made the change with the agent's tool calls
        replies = _llm_stats(target.llm_url)["replies"]
        assert replies.get("tool:edit", 0) - target.edits_before == 2, replies


@pytest.mark.parametrize("target", ["real-chat", "compat"], indirect=True)
def test_a_request_changes_round_and_a_repair_round_go_through_the_daemon(
    stack: Stack, target: Target
) -> None:
    """The review loop against the daemon: the reviewer's comment reaches the plan agent,
    whose revision is approved; the build agent's first edit fails its test, and the
    repair round (shown the failing output) fixes it with the agent's tool calls."""
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "calc")
    token = issue_token(stack.env["DATABASE_URL"], "conformance", "admin")
    approver = {
        "Authorization": "Bearer "
        + issue_token(stack.env["DATABASE_URL"], "conformance-reviewer", "approver")
    }
    with httpx.Client(
        base_url=stack.api_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        intent = http.post("/intents", json={"repo": str(repo), "goal": f"{GOAL} [oc:buggy]"})
        assert intent.status_code == 201, intent.text
        run_id = intent.json()["intentId"]
        assert http.post(f"/intents/{run_id}/run").status_code == 202
        first = _wait(http, stack, run_id, "waiting_input")["planSha256"]
        asked = http.post(
            f"/runs/{run_id}/request-changes",
            json={"comment": "Also document it in README.md", "plan_sha256": first},
            headers=approver,
        )
        assert asked.status_code == 200, asked.text
        second = _wait(http, stack, run_id, "waiting_input")["planSha256"]
        assert second != first
        card = http.get(f"/runs/{run_id}/plan").json()
        assert [f["path"] for f in card["plan"]["files"]] == [
            "calc.py",
            "test_calc.py",
            "README.md",
        ]
        approved = http.post(
            f"/runs/{run_id}/approve-plan", json={"plan_sha256": second}, headers=approver
        )
        assert approved.status_code == 200, approved.text
        run = _wait(http, stack, run_id, "succeeded")
    rounds = {s["stepId"]: s["round"] for s in run["steps"]}
    assert rounds == {"CompileST": 2, "ApplyPatchST": 2, "DecideST": 1, "ExecuteST": 2}
    diff = _git(repo, "diff", f"main...kodo/{run_id}")
    assert "+    return a * b" in diff, "the repair fixed the body the test caught"
    assert "+    return a + b" not in diff
    rows = _calls_of(stack, run_id)
    assert [(r.step_id, r.attempt, r.status) for r in rows] == [
        ("CompileST", 1, "succeeded"),
        ("CompileST", 2, "succeeded"),
        ("ApplyPatchST", 1, "succeeded"),
        ("DecideST", 1, "succeeded"),
        ("ApplyPatchST", 2, "succeeded"),
    ]
