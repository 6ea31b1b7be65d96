"""`kodo doctor` on a healthy stack (green, exit 0), then red (exit 1) for each failure."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import Session

from devstack.supervisor import stop
from shared.db.models import Intent, StepRun
from shared.version import app_version
from tests import factories
from tests.factories import OpenCodeCallFactory, RunFactory
from tests.integration.cli.conftest import Kodo

pytestmark = pytest.mark.integration

CHECKS = [
    "postgres",
    "redis",
    "migrations",
    "opencode",
    "model",
    "api",
    "workers",
    "beat",
    "stuck runs",
    "unknown calls",
    "waiting upgrade",
    "daemon worktrees",
    "statistics",
    "sandbox",
]


def test_doctor_is_green_with_exit_0_on_a_healthy_stack(kodo: Kodo) -> None:
    started = time.perf_counter()
    result = kodo("doctor")
    print(f"kodo doctor on a healthy stack: {time.perf_counter() - started:.2f}s (in-process)")
    print(result.output)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(CHECKS)
    assert all(line.startswith("ok ") for line in lines)
    body = json.loads(kodo("doctor", "--json").output)
    assert body["ok"] is True
    assert [c["name"] for c in body["checks"]] == CHECKS
    model = next(line for line in lines if line.split()[:2] == ["ok", "model"])
    assert "kodo/kodo-scripted (the SCRIPTED STAND-IN, not a real model)" in model
    beat = next(c for c in body["checks"] if c["name"] == "beat")
    assert beat["data"]["age_s"] <= beat["data"]["stale_after_s"], "beat stamps as it ticks"
    api = next(c for c in body["checks"] if c["name"] == "api")
    assert api["detail"] == f"{kodo.state.api_url}/healthz answered 200"


def test_doctor_is_red_when_the_api_does_not_answer(kodo: Kodo) -> None:
    result = kodo("doctor", "--api-url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL api"))
    assert "http://127.0.0.1:1/healthz: no answer" in line


def test_doctor_is_red_when_the_daemon_does_not_offer_the_configured_model(
    kodo: Kodo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OC_MODEL_ID", "no-such-model")
    result = kodo("doctor")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.split()[:2] == ["FAIL", "model"])
    assert "kodo/no-such-model" in line
    assert "does not offer it" in line


def test_doctor_says_what_to_do_when_there_is_no_sandbox(
    kodo: Kodo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KODO_SANDBOX_BWRAP", str(tmp_path / "no-bwrap"))
    result = kodo("doctor")
    assert result.exit_code == 1
    assert "FAIL sandbox" in result.output
    assert "apt-get install bubblewrap" in result.output


def test_doctor_says_dead_daemon_when_nothing_listens_on_the_oc_port(kodo: Kodo) -> None:
    result = kodo("doctor", "--oc-url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert "FAIL opencode" in result.output
    assert "dead daemon" in result.output


def test_doctor_says_port_collision_when_something_else_answers(kodo: Kodo) -> None:
    result = kodo("doctor", "--oc-url", kodo.state.api_url)
    assert result.exit_code == 1
    assert "port collision" in result.output


FACTORY_SUBMITTER = "tests"  # IntentFactory's submitted_by; the stack's runs have a token's


@pytest.fixture
def arrange(engine: Engine) -> Iterator[Session]:
    """A session for factory-made rows (the test commits them for doctor to see). The
    factories' intents are deleted afterwards, with their runs and calls: the module's
    tests share one stack, and the ones after this one expect it green."""
    with Session(engine) as session:
        factories.bind(session)
        yield session
        session.rollback()
    with engine.begin() as conn:
        conn.execute(delete(Intent).where(Intent.submitted_by == FACTORY_SUBMITTER))


def test_doctor_is_red_naming_the_workers_whose_version_differs_from_this_code(
    kodo: Kodo, engine: Engine
) -> None:
    with engine.begin() as conn:  # each live worker re-registers, as another build would
        added = list(
            conn.execute(
                text(
                    "INSERT INTO app.processes (kind, hostname, pid, app_version, migration_head)"
                    " SELECT DISTINCT ON (hostname, pid) kind, hostname, pid,"
                    " '0.0.1+elsewhere', migration_head FROM app.processes"
                    " WHERE kind = 'worker' ORDER BY hostname, pid, started_at DESC"
                    " RETURNING id"
                )
            ).scalars()
        )
    try:
        result = kodo("doctor")
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM app.processes WHERE id = ANY(:ids)"), {"ids": added})
    assert added, "the stack's worker registered itself"
    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL workers"))
    assert f"version mismatch with this code ({app_version()})" in line
    assert "runs 0.0.1+elsewhere" in line
    assert kodo("doctor").exit_code == 0, "green again once the versions agree"


def test_doctor_is_red_naming_the_runs_not_updated_for_longer_than_the_bound(
    kodo: Kodo, arrange: Session
) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=20)
    stuck = RunFactory(updated_at=long_ago)  # compiling, and nobody touched it for 20 minutes
    # ...while its step holds a live lease (a call that hangs, its lease still renewed), so
    # the stack's reconciler leaves it alone: a run with no checkpoint would be re-sent,
    # and its worker would touch it before doctor looked.
    arrange.add(
        StepRun(
            run_id=stuck.id,
            step_id="CompileST",
            status="running",
            started_at=long_ago,
            lease_owner="a-hung-worker",
            lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    RunFactory(waiting_input=True, updated_at=long_ago)  # waits for a human: not stuck
    RunFactory()  # compiling, updated just now
    arrange.commit()

    result = kodo("doctor", "--stuck-minutes", "15")

    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL stuck runs"))
    assert "not updated for > 15 min: compiling: 1 (1 waiting for approval, not counted)" in line
    assert kodo("doctor", "--stuck-minutes", "30").exit_code == 0, "none is 30 minutes old"


def test_doctor_is_red_naming_the_runs_with_a_call_of_unknown_outcome(
    kodo: Kodo, arrange: Session
) -> None:
    run = RunFactory(succeeded=True)
    OpenCodeCallFactory(run=run, status="unknown")
    OpenCodeCallFactory(run=run, attempt=2)  # a succeeded call is no concern
    arrange.commit()

    result = kodo("doctor")

    assert result.exit_code == 1, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL unknown calls"))
    assert f"1 call(s) with unknown outcome in 1 run(s): {run.id}" in line
    assert "check the provider's side before retrying" in line
    assert "ok   stuck runs" in result.output, "the stuck run of the test before is gone"


def test_doctor_is_red_with_exit_1_once_the_worker_is_stopped(kodo: Kodo) -> None:
    worker = next(p for p in kodo.state.procs if p.name == "worker")
    assert stop(worker.pid, grace_s=10) in {"stopped", "killed after grace"}
    result = kodo("doctor")
    print(result.output)
    assert result.exit_code == 1
    assert "FAIL workers" in result.output
    assert "no worker answered" in result.output
    assert "ok   postgres" in result.output


def test_doctor_is_red_once_beat_stopped_ticking(kodo: Kodo, engine: Engine) -> None:
    beat = next(p for p in kodo.state.procs if p.name == "beat")
    assert stop(beat.pid, grace_s=10) in {"stopped", "killed after grace"}
    with engine.begin() as conn:  # as a minute without beat would leave its stamp
        conn.execute(
            text(
                "UPDATE app.processes SET last_seen_at = now() - interval '60 seconds'"
                " WHERE kind = 'beat'"
            )
        )
    result = kodo("doctor")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL beat"))
    assert "last tick 60s ago: beat is down or stuck" in line
