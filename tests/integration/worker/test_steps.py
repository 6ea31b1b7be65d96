"""Steps in-process on real Postgres, Redis, git and the compat server over HTTP."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import load_context, run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.clock import SystemClock
from shared.db.engine import unit_of_work
from shared.db.models import OpenCodeCall, Run, WebhookDelivery
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.step_outcome import PLAN_ARTIFACT
from shared.domain.webhooks import endpoint
from shared.hashing import canonical_bytes, sha256_hex
from shared.service.messages import InMemorySender, RunStep
from shared.service.runs import approve_plan, dispatch_approved
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    commits_on_branch,
    diagnostic,
    new_run,
    prompts_at_server,
    uow,
    wait_lease_lapsed,
)

pytestmark = pytest.mark.integration


def test_compile_reaches_waiting_input_and_a_redelivery_does_nothing(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "skipped"
    assert prompts_at_server(rt) == 1


def test_a_run_event_leaves_a_webhook_outbox_row_only_when_a_webhook_is_configured(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    hook = endpoint("http://127.0.0.1:9/hook", "s" * 32, "global")
    quiet, told = make_rt(), make_rt(webhook=hook)
    quiet_run, told_run = new_run(quiet, repo), new_run(told, repo)

    assert run_step(quiet, StepId.COMPILE, quiet_run, compile_step) == "waiting_input"
    assert run_step(told, StepId.COMPILE, told_run, compile_step) == "waiting_input"

    with told.sessions() as s:
        rows = s.execute(select(WebhookDelivery.run_id, WebhookDelivery.event)).all()
    assert [(r.run_id, r.event) for r in rows] == [(told_run, "waiting_input")]


def test_compile_stores_the_plan_as_the_exact_bytes_its_digest_is_taken_over(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo, goal="Document a naïve reading of calc.py — für alle")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    with rt.sessions() as s:
        digest = s.execute(select(Run.plan_sha256).where(Run.id == run_id)).scalar_one()
        plan = ArtifactRepo(s).get(run_id, StepId.COMPILE, PLAN_ARTIFACT)
    assert plan is not None
    assert plan.kind == "plan_card"
    assert digest is not None
    assert sha256_hex(plan.content) == plan.sha256 == digest
    assert plan.content == canonical_bytes(json.loads(plan.content))
    assert "naïve".encode() in plan.content  # UTF-8 as is, not \u escapes


def test_a_step_redelivered_after_its_provider_call_reuses_the_recorded_answer(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2)
    run_id = new_run(rt, repo)
    ctx = load_context(rt, run_id, StepId.COMPILE)
    assert ctx is not None
    compile_step(ctx)  # the worker "dies" here: the call is recorded, the step is not
    wait_lease_lapsed(rt, run_id, StepId.COMPILE)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert prompts_at_server(rt) == 1
    with rt.sessions() as s:
        deliveries = s.execute(
            text("SELECT deliveries FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert deliveries == 2


def test_apply_refuses_to_touch_code_without_an_approval(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
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
    assert commits_on_branch(repo, run_id) == 0


def test_apply_refuses_a_plan_json_whose_bytes_are_not_the_approved_digest(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    with unit_of_work(rt.sessions) as s:  # the same plan, re-serialised: other bytes
        stored = ArtifactRepo(s).get(run_id, StepId.COMPILE, PLAN_ARTIFACT)
        assert stored is not None
        pretty = json.dumps(json.loads(stored.content), indent=2).encode()
        stored.content, stored.size, stored.sha256 = pretty, len(pretty), sha256_hex(pretty)

    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    assert (
        "plan_matches_digest: the stored plan.json does not hash" in diagnostic(rt, run_id)["error"]
    )
    assert commits_on_branch(repo, run_id) == 0
    assert prompts_at_server(rt) == 1, "the build agent was never asked"


def test_a_patch_applied_before_a_crash_is_not_applied_twice(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(step_lease_s=0.2)
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    ctx = load_context(rt, run_id, StepId.APPLY_PATCH)
    assert ctx is not None
    first = apply_patch_step(ctx)  # committed in git, never recorded in Postgres
    wait_lease_lapsed(rt, run_id, StepId.APPLY_PATCH)
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
    assert commits_on_branch(repo, run_id) == 1


def test_two_watchers_racing_dispatch_an_approved_run_once(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    with uow(rt) as work:  # recorded without the move: only the watchers will see it
        approve_plan(work, run_id, approver="alice", now=rt.clock.now(), dispatch=False)
    won: list[list[str]] = []
    sender = InMemorySender()
    barrier = threading.Barrier(4)

    def watch() -> None:
        barrier.wait()
        with uow(rt, sender) as work:
            won.append(dispatch_approved(work, now=rt.clock.now()))

    threads = [threading.Thread(target=watch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(won, key=len) == [[], [], [], [run_id]]
    assert sender.sent == [RunStep(StepId.APPLY_PATCH, run_id)], "one send, by the winner"


def test_a_configuration_error_fails_the_step_at_once_without_retries(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(oc_model_id="no-such-model")
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["error"].startswith("configuration error, not retried")
    assert [a["error_name"] for a in report["attempts"]] == ["OpenCodeConfigError"]


class SleepLog(SystemClock):
    """The real clock, except that a backoff is written down instead of waited out."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _ledger(rt: Runtime, run_id: str) -> list[tuple[int, str, str | None]]:
    with rt.sessions() as s:
        rows = s.execute(
            select(OpenCodeCall.attempt, OpenCodeCall.status, OpenCodeCall.error_name)
            .where(OpenCodeCall.run_id == run_id)
            .order_by(OpenCodeCall.attempt)
        ).all()
    return [(a, st, name) for a, st, name in rows]


def test_a_daemon_http_500_is_retried_after_a_backoff_and_the_plan_still_arrives(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    clock = SleepLog()
    rt = make_rt(clock, retry_backoff_s=2.0)
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:http500-attempts=1]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    assert _ledger(rt, run_id) == [(1, "failed", "OpenCodeServerError"), (2, "succeeded", None)]
    assert clock.slept == [2.0]


def test_a_daemon_that_answers_http_500_every_time_spends_the_budget_and_says_so(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    clock = SleepLog()
    rt = make_rt(clock, retry_backoff_s=1.0, schema_retries=3)
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:http500]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["error"].startswith(
        "no valid plan after 3 attempts: the provider failed every attempt"
    )
    assert "HTTP 500 UnknownError" in report["error"]
    assert [
        (a["attempt"], a["status"], a["error_name"], a["kind"]) for a in report["attempts"]
    ] == [(n, "failed", "OpenCodeServerError", "transient") for n in (1, 2, 3)]
    assert _ledger(rt, run_id) == [(n, "failed", "OpenCodeServerError") for n in (1, 2, 3)]
    assert clock.slept == [1.0, 2.0]


def test_stalled_calls_are_retried_under_new_attempts_then_fail_with_adiagnostic(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(oc_timeout_ms=300, schema_retries=2)
    run_id = new_run(rt, repo, goal="Add multiply to calc.py [oc:slow=5000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["error"].startswith("no valid plan after 2 attempts: the provider failed")
    assert [(a["attempt"], a["status"]) for a in report["attempts"]] == [
        (1, "timed_out"),
        (2, "timed_out"),
    ]
    stats = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    assert stats["aborts"] >= 2, "each stalled call's session was aborted"


def test_concurrent_runs_on_one_repository_each_get_their_worktree(rt: Runtime, repo: Path) -> None:
    from services.worker.git_ops import ensure_worktree

    errors: list[Exception] = []
    barrier = threading.Barrier(16)

    def make(i: int) -> None:
        barrier.wait()
        try:
            ensure_worktree(repo, rt.settings.workspace_dir, f"race-{i}", "HEAD")
        except Exception as exc:  # collected: the test shows every failure
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert all((rt.settings.workspace_dir / f"race-{i}" / ".git").exists() for i in range(16))


def test_each_step_records_how_long_its_git_or_verification_work_took(
    rt: Runtime, repo: Path
) -> None:
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    for step, body in (
        (StepId.APPLY_PATCH, apply_patch_step),
        (StepId.DECIDE, decide_step),
        (StepId.EXECUTE, execute_step),
    ):
        run_step(rt, step, run_id, body)
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT step_id, (output->>'git_ms')::int AS git, (output->>'command_ms')::int"
                " AS command, duration_ms FROM app.step_runs WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()
    timing = {r.step_id: (r.git, r.command, r.duration_ms) for r in rows}

    assert set(timing) == {"CompileST", "ApplyPatchST", "DecideST", "ExecuteST"}
    for step in ("CompileST", "ApplyPatchST"):
        git_ms, _, duration = timing[step]
        assert git_ms is not None, step
        assert 0 < git_ms <= duration, (step, timing[step])
    assert timing["DecideST"][0] == 0, "the diffstat ApplyPatchST recorded: no git"
    git_ms, command_ms, duration = timing["ExecuteST"]
    assert command_ms is not None
    assert git_ms is not None, "the worktree's check and the private checkout"
    assert 0 < command_ms <= duration
    assert 0 < git_ms <= duration - command_ms


def test_apply_records_the_commits_diffstat_that_decide_shows_the_agent(
    rt: Runtime, repo: Path
) -> None:
    """git's own ``diff --stat`` of the judged commit, read once beside the commit: both of
    DecideST's deliveries (send, then collect) build their prompt from it."""
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    with rt.sessions() as s:
        commit, diffstat = s.execute(
            text(
                "SELECT output->>'commit', output->>'diffstat' FROM app.step_runs"
                " WHERE run_id = :r AND step_id = 'ApplyPatchST'"
            ),
            {"r": run_id},
        ).one()
    stat = ["git", "-C", str(repo), "diff", "--stat", f"{commit}~1", commit]
    assert diffstat == subprocess.run(stat, capture_output=True, check=True).stdout.decode()
    assert "calc.py" in diffstat
