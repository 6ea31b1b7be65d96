"""A call refused TurnNotInspectable, as each step meets it: the run fails closed naming
the rule; ApplyPatchST undoes the turn's edits and commits nothing (red-team pass 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from shared.opencode.calls import CallFailed, StructuredCall, StructuredResult
from standins.oc_compat import edits
from standins.oc_compat.answers import edit_report
from tests.integration.worker.conftest import (
    approve,
    commits_on_branch,
    diagnostic,
    new_run,
    read_run,
)
from tests.integration.worker.hostile import git_out, hostile, patch_of, plan_of

SECRET = "OTHER-RUNS-SECRET"  # noqa: S105 - a marker, not a credential
ADD = (
    "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n"
    "+++ b/NOTES.md\n@@ -0,0 +1 @@\n+x\n"
)


def _refusing(rt: Runtime, step: str, *, edit: bool) -> None:
    model = hostile(rt)
    real = model.prompt_structured

    def prompt(call: StructuredCall, **kw: Any) -> StructuredResult:
        if call.step_id != step:
            return real(call, **kw)
        if kw.get("prepare") is not None:
            kw["prepare"]()
        if edit:
            diff, _ = edit_report(patch_of(ADD))
            edits.perform(Path(call.directory), diff)
        raise CallFailed(
            call.op_key,
            "failed",
            "TurnNotInspectable: cannot read the turn to judge it: AnswerTooLarge",
            error_name="TurnNotInspectable",
            kind="refused",
        )

    model.prompt_structured = prompt  # type: ignore[method-assign]


def test_apply_patch_refused_unjudged_fails_undoes_and_never_commits(
    rt: Runtime, repo: Path
) -> None:
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "NOTES.md", "change": "add"})
    run_id = new_run(rt, repo, goal="Add notes")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    _refusing(rt, StepId.APPLY_PATCH.value, edit=True)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    run = read_run(rt, run_id)
    report = diagnostic(rt, run_id)
    assert run.error is not None
    assert "TurnNotInspectable" in run.error
    assert report.get("rule") == "confinement", report
    assert report["attempts"][-1]["error_name"] == "TurnNotInspectable"
    assert report.get("worktree") == "reset to HEAD"
    assert commits_on_branch(repo, run_id) == 0
    wt = Path(str(run.worktree_path))
    assert not (wt / "NOTES.md").exists(), "the refused turn's edit stayed on disk"
    assert git_out(wt, "status", "--porcelain", "--ignored") == ""


def test_compile_refused_unjudged_fails_naming_the_rule(rt: Runtime, repo: Path) -> None:
    _refusing(rt, StepId.COMPILE.value, edit=False)
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report.get("rule") == "confinement"
    assert len(report["attempts"]) == 1
