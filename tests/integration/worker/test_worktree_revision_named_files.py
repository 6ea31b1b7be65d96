"""A file the agent leaves named like a revision kodo passes (``HEAD``) changes nothing
kodo's git does: its git with no work tree reads no file names, and the undo passes
``--`` after the revision. (Before, ``git diff --cached HEAD`` and ``git reset --hard
HEAD`` failed as ambiguous: the change went unjudged and the undo left the file.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run
from tests.integration.worker.hostile import hostile, patch_of, plan_of

pytestmark = pytest.mark.integration

README_EDIT = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
)


def test_a_file_named_head_is_judged_and_undone(rt: Runtime, repo: Path) -> None:
    def leave_head(directory: Path) -> None:
        (directory / "HEAD").write_text("not a ref\n")

    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(README_EDIT)
    model.actions[StepId.APPLY_PATCH.value] = leave_head
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    outcome = run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)

    assert outcome == "failed"
    report = diagnostic(rt, run_id)
    assert [v["rule"] for v in report["violations"]] == ["outside_plan"], report["error"]
    assert not (rt.settings.workspace_dir / run_id / "HEAD").exists(), "the undo left it"
