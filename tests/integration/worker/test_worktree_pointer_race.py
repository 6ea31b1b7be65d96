"""A hostile agent races kodo's check of a worktree's ``.git`` pointer.

Every worktree lies in the daemon's one writable folder, so a process an agent left
running can swap a run's ``.git`` pointer at any moment. kodo checks the pointer before
running git in a worktree (worktree_guard); a git that found its git dir through the
pointer would read it again, after the check, and could be shown a git dir of the
agent's own: its config's filter drivers then run as kodo, outside any sandbox, and its
index and HEAD decide what kodo stages, judges and resets.

The attacker (tests/integration/worker/hostile_watcher.py, ``pointer``) waits for the K-th read of
the pointer, puts a pointer to its own git dir in place, and puts git's pointer back
after the next read, so every check that comes after sees git's pointer again. For each
K the run must either go on with its own git dir or fail closed naming the rule; the
agent's git dir is never used.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run
from tests.integration.worker.hostile import hostile, patch_of, plan_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's"),
]

WATCHER = Path(__file__).with_name("hostile_watcher.py")
README_EDIT = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
)
READS_ATTACKED = range(1, 25)


def _planted_gitdir(folder: Path, marker: Path) -> Path:
    """A git dir of the agent's own: one commit, and a filter driver (for every path, by
    its ``info/attributes``) that leaves ``marker`` when git runs it."""
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    (folder / "planted.txt").write_text("the agent's\n")
    ident = ["-c", "user.name=a", "-c", "user.email=a@b"]
    subprocess.run(["git", "-C", str(folder), "add", "planted.txt"], check=True)
    subprocess.run(["git", "-C", str(folder), *ident, "commit", "-qm", "x"], check=True)
    gitdir = folder / ".git"
    program = f"sh -c 'echo ran >> {marker}; cat'"
    for key in ("filter.evil.clean", "filter.evil.smudge"):
        subprocess.run(["git", "--git-dir", str(gitdir), "config", key, program], check=True)
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "attributes").write_text("* filter=evil\n")
    return gitdir


@pytest.fixture
def flippers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("k", READS_ATTACKED)
def test_a_pointer_swapped_between_kodos_check_and_its_git_is_never_followed(
    rt: Runtime,
    repo: Path,
    tmp_path: Path,
    flippers: list[subprocess.Popen[str]],
    k: int,
) -> None:
    marker = tmp_path / "agent-program-ran"
    planted = _planted_gitdir(rt.settings.workspace_dir.parent / f"planted-{k}", marker)
    planted_index = (planted / "index").read_bytes()

    def leave_a_flipper_running(worktree: Path) -> None:
        proc = subprocess.Popen(
            [sys.executable, str(WATCHER), "pointer", str(worktree), str(planted), str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        flippers.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(README_EDIT)
    model.actions[StepId.APPLY_PATCH.value] = leave_a_flipper_running
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

    assert not marker.exists(), "a filter driver of the agent's git dir ran as kodo"
    assert (planted / "index").read_bytes() == planted_index, "kodo's git used the agent's"
    assert outcome in {"succeeded", "failed"}, outcome
    if outcome == "failed":
        report = diagnostic(rt, run_id)
        assert report.get("rule") == "worktree_gitdir", report.get("error")
