"""Helpers for the specs where the repository's owner is the attacker (git_dir,
delivery_target): git in a folder, a run driven to success in process, what a folder
holds, the branches of a bare repository, what a run's row says."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import text

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, new_run


def git_in(cwd: Path, *args: str) -> str:
    """git as the repository's owner would run it (an identity for commits)."""
    ident = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
    done = subprocess.run(
        ["git", *ident, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def succeeded_run(rt: Runtime, repo: Path) -> str:
    """A run on ``repo`` driven through its four steps to ``succeeded``, in process."""
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "executing"
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    return run_id


def listing(folder: Path) -> list[str]:
    """Every name under ``folder``, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def branches(bare: Path) -> list[str]:
    return git_in(bare, "for-each-ref", "--format=%(refname)", "refs/heads/").split()


def run_column(rt: Runtime, run_id: str, column: str) -> str:
    """The run row's ``error`` or ``delivery_error`` ("" when there is none)."""
    query = {
        "error": "SELECT error FROM app.runs WHERE id = :r",
        "delivery_error": "SELECT delivery_error FROM app.runs WHERE id = :r",
    }[column]
    with rt.sessions() as s:
        value = s.execute(text(query), {"r": run_id}).scalar_one()
    return "" if value is None else str(value)


def delivery_error(rt: Runtime, run_id: str) -> str:
    return run_column(rt, run_id, "delivery_error")
