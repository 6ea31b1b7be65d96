"""A hostile build agent that leaves a process racing kodo (hostile_watcher.py), and a
run driven from plan to verification around it, for the race tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run
from tests.integration.worker.hostile import hostile, patch_of, plan_of

WATCHER = Path(__file__).with_name("hostile_watcher.py")
README_EDIT = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
)


class Racers:
    """The watcher processes a test's agents left running; all killed when the ``with``
    block ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Racers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def leave(self, mode: str, worktree: Path, target: Path, k: int) -> None:
        """Start ``hostile_watcher.py MODE WORKTREE TARGET K``; return once it watches."""
        proc = subprocess.Popen(
            [sys.executable, str(WATCHER), mode, str(worktree), str(target), str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run_through(rt: Runtime, repo: Path, mode: str, target: Path, k: int, racers: Racers) -> str:
    """A run whose plan names README.md and whose build agent edits it and leaves a
    ``mode`` watcher on its worktree; driven to verification, or to where it stopped.
    Returns the outcome, after checking that a failure names ``worktree_gitdir``."""
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(README_EDIT)
    model.actions[StepId.APPLY_PATCH.value] = lambda tree: racers.leave(mode, tree, target, k)
    model.scripts[StepId.DECIDE.value] = {
        "next_action": "verify",
        "argv": ["python3", "-c", "print('ok')"],
        "reason": "runs",
    }
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    outcome = run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)
    if outcome == "deciding":
        outcome = run_step(rt, StepId.DECIDE, run_id, decide_step)
    if outcome == "executing":
        outcome = run_step(rt, StepId.EXECUTE, run_id, execute_step)
    assert outcome in {"succeeded", "failed"}, outcome
    if outcome == "failed":
        report = diagnostic(rt, run_id)
        assert report.get("rule") == "worktree_gitdir", report.get("error")
    return outcome
