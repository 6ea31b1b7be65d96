"""Steps in-process on real Postgres, Redis, git and the compat server over HTTP."""

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
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.oc_compat import running_server
from services.sample_repo import create_sample_repo
from services.worker.runtime import Runtime, build_runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import load_context, run_step
from services.worker.steps.compile import compile_step
from shared.config import Settings
from shared.db.engine import unit_of_work
from shared.db.models import OpenCodeCall, Run
from shared.domain.run_machine import StepId
from shared.queue import make_celery
from shared.service.runs import decide_plan, dispatch_approved, start_run, submit_intent

pytestmark = pytest.mark.integration
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

    def make(**overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": broker,
            "oc_base_url": oc_url,
            "oc_timeout_ms": 10000,
            "repo_roots": (tmp_path,),
            "workspace_dir": tmp_path / "ws",
        }
        settings = Settings(**{**values, **overrides})
        made.append(build_runtime(settings, make_celery(settings)))
        return made[-1]

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def rt(make_rt: RuntimeFactory) -> Runtime:
    return make_rt()


def _new_run(rt: Runtime, repo: Path, goal: str = "Add multiply to calc.py") -> str:
    with unit_of_work(rt.sessions) as s:
        intent = submit_intent(s, repo=repo, goal=goal, base_ref="HEAD", submitted_by="t")
        start_run(s, intent.id, app_version="test", now=rt.clock.now())
        return intent.id


def _prompts(rt: Runtime) -> int:
    count: int = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()["prompts"]
    return count


def _commits_on_branch(repo: Path, run_id: str) -> int:
    out = subprocess.run(
        ["git", "rev-list", "--count", f"main..kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def _approve(rt: Runtime, run_id: str) -> None:
    with unit_of_work(rt.sessions) as s:
        decide_plan(s, run_id, approve=True, approver="alice", now=rt.clock.now())
    with unit_of_work(rt.sessions) as s:
        assert dispatch_approved(s, now=rt.clock.now()) == [run_id]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_sample_repo(tmp_path / "calc")


def test_compile_reaches_waiting_input_and_a_redelivery_does_nothing(
    rt: Runtime, repo: Path
) -> None:
    run_id = _new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"
    assert _prompts(rt) == 1


def test_a_step_redelivered_after_its_provider_call_reuses_the_recorded_answer(
    rt: Runtime, repo: Path
) -> None:
    run_id = _new_run(rt, repo)
    ctx = load_context(rt, run_id, StepId.COMPILE)
    assert ctx is not None
    compile_step(ctx)  # the worker "dies" here: the call is recorded, the step is not
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert _prompts(rt) == 1
    with rt.sessions() as s:
        deliveries = s.execute(
            text("SELECT deliveries FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert deliveries == 2


def test_apply_refuses_to_touch_code_without_an_approval(rt: Runtime, repo: Path) -> None:
    run_id = _new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    with unit_of_work(rt.sessions) as s:  # a run pushed past the gate by hand
        s.execute(update(Run).where(Run.id == run_id).values(status="applying"))
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert "no approval" in (run.error or "")
        agents = s.execute(
            select(OpenCodeCall.agent).where(OpenCodeCall.run_id == run_id)
        ).scalars()
        assert list(agents) == ["plan"]
    assert _commits_on_branch(repo, run_id) == 0


def test_a_patch_applied_before_a_crash_is_not_applied_twice(rt: Runtime, repo: Path) -> None:
    run_id = _new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    _approve(rt, run_id)
    ctx = load_context(rt, run_id, StepId.APPLY_PATCH)
    assert ctx is not None
    first = apply_patch_step(ctx)  # committed in git, never recorded in Postgres
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    with rt.sessions() as s:
        commit = s.execute(
            text(
                "SELECT output->>'commit' FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).scalar_one()
    assert commit == first.output["commit"]
    assert _commits_on_branch(repo, run_id) == 1


def test_two_watchers_racing_dispatch_an_approved_run_once(rt: Runtime, repo: Path) -> None:
    run_id = _new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    with unit_of_work(rt.sessions) as s:
        decide_plan(s, run_id, approve=True, approver="alice", now=rt.clock.now())
    won: list[list[str]] = []
    barrier = threading.Barrier(4)

    def watch() -> None:
        barrier.wait()
        with unit_of_work(rt.sessions) as s:
            won.append(dispatch_approved(s, now=rt.clock.now()))

    threads = [threading.Thread(target=watch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(won, key=len) == [[], [], [], [run_id]]
    messages = redis.Redis.from_url(rt.settings.redis_url).llen("kodo")
    assert messages == 0, "dispatch_approved only decides; the caller enqueues after commit"


def _diagnostic(rt: Runtime, run_id: str) -> dict[str, Any]:
    with rt.sessions() as s:
        body = s.execute(
            text(
                "SELECT content FROM app.artifacts WHERE run_id = :r AND name = 'diagnostic.json'"
            ),
            {"r": run_id},
        ).scalar_one()
    report: dict[str, Any] = json.loads(bytes(body))
    return report


def test_a_configuration_error_fails_the_step_at_once_without_retries(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(oc_model_id="no-such-model")
    run_id = _new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = _diagnostic(rt, run_id)
    assert report["error"].startswith("configuration error, not retried")
    assert [a["error_name"] for a in report["attempts"]] == ["OpenCodeConfigError"]


def test_stalled_calls_are_retried_under_new_attempts_then_fail_with_a_diagnostic(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(oc_timeout_ms=300, schema_retries=2)
    run_id = _new_run(rt, repo, goal="Add multiply to calc.py [oc:slow=5000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = _diagnostic(rt, run_id)
    assert report["error"] == "no valid plan after 2 attempts"
    assert [(a["attempt"], a["status"]) for a in report["attempts"]] == [
        (1, "timed_out"),
        (2, "timed_out"),
    ]
    stats = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    assert stats["aborts"] >= 2, "each stalled call's session was aborted"
