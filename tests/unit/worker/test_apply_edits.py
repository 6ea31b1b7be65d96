"""ApplyPatchST as a specification: the build agent edits the worktree, kodo takes the
change from git, judges it against the plan, and commits it once.

The daemon is the in-memory fake (its turns write files the way edit tools would)
behind the real call protocol on the in-memory ledger; git and the worktree are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.worker.git_ops import Worktree, ensure_worktree, git, head_trailer, lock_dir
from services.worker.steps.apply_patch import OP_KEY_TRAILER, PATCH_TRAILER, apply_patch_step
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.domain.prompts import apply_prompt, plan_brief
from shared.domain.run_machine import StepId
from shared.domain.step_outcome import StepOutcome
from shared.hashing import canonical_bytes, sha256_hex
from shared.opencode.calls import StructuredCall
from tests.fakes.agent import FakeAgent, ScriptedTurn
from tests.fakes.steps import StepWorld
from tests.unit.worker.conftest import CALC

DOCUMENTED = 'def add(a, b):\n    """Add two numbers."""\n    return a + b\n'
PLAN: dict[str, Any] = {
    "design": "Document add().",
    "files": [{"path": "calc.py", "change": "modify", "why": "the docstring"}],
    "risks": [],
    "tests": [],
}
APPROVED = {
    "plan": PLAN,
    "plan_sha256": sha256_hex(canonical_bytes(PLAN)),
    "approved_at": "2026-01-01T00:00:00+00:00",
}
GOAL = "Add a docstring to calc.py"  # StepWorld's goal


def said(files: list[str], summary: str = "Document add().") -> dict[str, Any]:
    return {"summary": summary, "files": files}


@pytest.fixture
def worktree(repo: Path, tmp_path: Path) -> Worktree:
    return ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def _repo(wt: Worktree) -> Path:
    return wt.path.parent.parent / "repo"


def _run(world: StepWorld, wt: Worktree, *, first: bool = True) -> StepOutcome:
    ctx = world.context(
        StepId.APPLY_PATCH, _repo(wt), worktree_path=wt.path, first_delivery=first, **APPROVED
    )
    return apply_patch_step(ctx)


def _head(wt: Worktree) -> str:
    return git(wt.path, "rev-parse", "HEAD").strip()


def _attempt_call(wt: Worktree, attempt: int, rejected: list[str]) -> StructuredCall:
    prompt = apply_prompt(GOAL, plan_brief(PLAN), attempt, rejected)
    return StructuredCall(
        "run-1", "ApplyPatchST", attempt, "build", prompt, EDIT_REPORT_SCHEMA, str(wt.path)
    )


def test_the_agents_edits_are_committed_with_the_diff_git_reports(worktree: Worktree) -> None:
    world = StepWorld(
        FakeAgent(ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}))
    )
    before = _head(worktree)
    outcome = _run(world, worktree)
    assert outcome.ok, outcome.error
    assert git(worktree.path, "rev-parse", "HEAD~1").strip() == before
    assert outcome.output["commit"] == _head(worktree)
    (patch,) = outcome.artifacts
    assert patch.name == "patch.diff"
    assert (
        patch.content
        == git(worktree.path, "diff", "--binary", "--full-index", "-M", "HEAD~1", "HEAD").encode()
    )
    assert '+    """Add two numbers."""' in patch.content.decode()
    assert head_trailer(worktree, PATCH_TRAILER) == sha256_hex(patch.content)
    assert head_trailer(worktree, OP_KEY_TRAILER) == outcome.output["attempts"][0]["op_key"]
    assert "Implement the approved plan below by editing the files" in world.agent.sent[0].text
    assert "- modify calc.py: the docstring" in world.agent.sent[0].text


def test_an_attempt_that_changed_nothing_is_retried_with_the_reason(worktree: Worktree) -> None:
    world = StepWorld(
        FakeAgent(
            ScriptedTurn(answer=said(["calc.py"])),
            ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}),
        )
    )
    outcome = _run(world, worktree)
    assert outcome.ok, outcome.error
    assert [a["status"] for a in outcome.output["attempts"]] == ["rejected", "applied"]
    assert "the attempt changed nothing in the worktree" in world.agent.sent[1].text


def test_a_change_beyond_the_plan_fails_closed_without_another_try(worktree: Worktree) -> None:
    world = StepWorld(
        FakeAgent(
            ScriptedTurn(
                answer=said(["calc.py", "other.py"]),
                edits={"calc.py": DOCUMENTED, "other.py": "x = 1\n"},
            )
        )
    )
    before = _head(worktree)
    outcome = _run(world, worktree)
    assert outcome.error is not None
    assert outcome.error.startswith("the agent's change breaks the approved plan")
    assert "outside_plan" in outcome.error
    assert "other.py" in outcome.error
    assert _head(worktree) == before, "nothing is committed"
    assert len(world.agent.sent) == 1, "no other try"
    assert not (worktree.path / "other.py").exists(), "the refused edit is undone"
    assert (worktree.path / "calc.py").read_text() == CALC
    again = _run(world, worktree, first=False)  # redelivered: the tree is clean now
    assert again.error == outcome.error, "the recorded verdict, not a fresh look"
    assert len(world.agent.sent) == 1


def test_a_file_list_that_disagrees_with_git_is_retried_from_a_reset_tree(
    worktree: Worktree,
) -> None:
    world = StepWorld(
        FakeAgent(
            ScriptedTurn(answer=said(["README.md"]), edits={"calc.py": CALC + "# half\n"}),
            ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}),
        )
    )
    outcome = _run(world, worktree)
    assert outcome.ok, outcome.error
    first = outcome.output["attempts"][0]
    assert first["status"] == "rejected"
    assert first["error"].startswith("files_mismatch: git shows changes to calc.py")
    assert "README.md" in first["error"]
    assert "files_mismatch" in world.agent.sent[1].text
    assert (worktree.path / "calc.py").read_text() == DOCUMENTED


def test_an_absolute_path_inside_the_worktree_counts_as_that_file(worktree: Worktree) -> None:
    inside = str(worktree.path.resolve() / "calc.py")
    world = StepWorld(FakeAgent(ScriptedTurn(answer=said([inside]), edits={"calc.py": DOCUMENTED})))
    assert _run(world, worktree).ok


def test_a_redelivery_after_the_commit_commits_nothing_twice(worktree: Worktree) -> None:
    world = StepWorld(
        FakeAgent(ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}))
    )
    first = _run(world, worktree)
    again = _run(world, worktree, first=False)  # the fake has no turn left: no new call
    assert again.ok, again.error
    assert again.output["commit"] == first.output["commit"] == _head(worktree)
    assert again.artifacts[0].content == first.artifacts[0].content
    assert len(world.agent.sent) == 1


def test_a_replayed_attempt_keeps_the_verdict_its_first_delivery_gave(worktree: Worktree) -> None:
    """Attempt 1 was rejected, attempt 2 edited; the worker died before committing. The
    redelivery must not take attempt 2's edits as attempt 1's answer."""
    world = StepWorld(
        FakeAgent(
            ScriptedTurn(answer=said(["calc.py"])),
            ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}),
        )
    )
    first = _run(world, worktree)
    git(worktree.path, "reset", "-q", "--mixed", "HEAD~1")  # as if it died before the commit
    again = _run(world, worktree, first=False)
    assert again.ok, again.error
    assert [a["status"] for a in again.output["attempts"]] == ["rejected", "applied"]
    second_key = first.output["attempts"][1]["op_key"]
    assert head_trailer(worktree, OP_KEY_TRAILER) == second_key
    assert len(world.agent.sent) == 2, "both attempts replayed from the ledger"


def test_a_worktree_is_never_reset_while_an_earlier_call_may_still_edit_it(
    worktree: Worktree,
) -> None:
    """Attempt 1's worker died mid-edit; its session is still busy and ignores the abort."""
    world = StepWorld(FakeAgent())
    dead = _attempt_call(worktree, 1, [])
    world.ledger.claimed_elsewhere(dead, age_s=3600)
    world.ledger.rows[dead.op_key].session_id = "ses_dead"
    world.agent.busy = {"ses_dead"}
    world.agent.stubborn = {"ses_dead"}
    (worktree.path / "calc.py").write_text(CALC + "# half-edited\n")
    outcome = _run(world, worktree, first=False)
    assert outcome.error is not None
    assert world.agent.sent == [], "nothing was sent while the worktree was busy"
    assert "ses_dead" in world.agent.aborted
    attempts = json.loads(outcome.artifacts[0].content)["attempts"]
    busy = [a for a in attempts if a.get("error_name") == "WorktreeBusy"]
    assert busy
    assert "worktree_quiet" in busy[0]["error"]
    assert (worktree.path / "calc.py").read_text() == CALC + "# half-edited\n"


def test_an_abandoned_call_is_aborted_then_its_half_edit_is_reset(worktree: Worktree) -> None:
    world = StepWorld(
        FakeAgent(ScriptedTurn(answer=said(["calc.py"]), edits={"calc.py": DOCUMENTED}))
    )
    dead = _attempt_call(worktree, 1, [])
    world.ledger.claimed_elsewhere(dead, age_s=3600)
    world.ledger.rows[dead.op_key].session_id = "ses_dead"
    world.agent.busy = {"ses_dead"}  # busy until aborted
    (worktree.path / "calc.py").write_text(CALC + "# half-edited\n")
    (worktree.path / "stray.txt").write_text("left by the dead call\n")
    outcome = _run(world, worktree, first=False)
    assert outcome.ok, outcome.error
    assert [a["status"] for a in outcome.output["attempts"]] == ["unknown", "applied"]
    assert world.agent.aborted[0] == "ses_dead"
    assert (worktree.path / "calc.py").read_text() == DOCUMENTED
    assert not (worktree.path / "stray.txt").exists()
    assert "half-edited" not in outcome.artifacts[0].content.decode()


def test_the_worktree_locks_lie_outside_the_folder_the_daemon_may_write(tmp_path: Path) -> None:
    """An agent holding a lock file would stall every run on the repository."""
    workspaces = tmp_path / "workspaces"
    locks = lock_dir(workspaces)
    assert locks.parent == workspaces.resolve().parent
    assert not locks.is_relative_to(workspaces.resolve())
