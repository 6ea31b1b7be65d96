"""Per-repository run-time gates fail runs closed, with the evidence, on real git repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run

pytestmark = pytest.mark.integration


def _commit_policy(repo: Path, toml: str) -> None:
    (repo / ".kodo").mkdir(exist_ok=True)
    (repo / ".kodo" / "policy.toml").write_text(toml)
    ident = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", *ident, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run(
        ["git", *ident, "commit", "-qm", "policy"], cwd=repo, check=True, capture_output=True
    )


def test_a_plan_touching_a_forbidden_path_is_never_shown_for_approval(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, '[policy]\nextra_forbidden_paths = ["calc.py"]\n')
    run_id = new_run(rt, repo, goal="Add multiply to calc.py")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["violations"] == [{"rule": "forbidden_path", "detail": "calc.py matches calc.py"}]
    assert report["policy"]["source"] == "HEAD:.kodo/policy.toml"


def test_a_patch_over_the_line_budget_fails_closed_before_git_apply(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, "[policy]\nmax_lines = 1\n")
    run_id = new_run(rt, repo, goal="Add multiply to calc.py")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    report = diagnostic(rt, run_id)
    assert [v["rule"] for v in report["violations"]] == ["max_lines"]
    log = subprocess.run(
        ["git", "rev-list", "--count", f"main..kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert log.stdout.strip() == "0", "nothing was applied"


def test_a_malformed_policy_file_fails_the_run_rather_than_being_ignored(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, "[policy]\nmax_lines = 'lots'\n")
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    assert diagnostic(rt, run_id)["error"].startswith("PolicyError: max_lines")
