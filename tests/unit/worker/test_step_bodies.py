"""The step bodies against the fake daemon: what each answer makes of the step.

The agent and the ledger are in memory; git runs for real on a small repository in
``tmp_path`` (a step's work is git's work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.worker.git_ops import git
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.policy import Policy
from shared.domain.run_machine import StepId
from shared.hashing import canonical_bytes, sha256_hex
from tests.fakes.agent import FakeAgent, ScriptedTurn, unknown_model
from tests.fakes.steps import StepWorld
from tests.unit.worker.conftest import CALC

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


NOWHERE = Path("/nonexistent/kodo-unit")
"""The repository of a step refused before it opens one."""


def _head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def _compile_world(tmp_path: Path, *turns: ScriptedTurn) -> StepWorld:
    world = StepWorld(FakeAgent(*turns))
    world.settings = type(world.settings)(workspace_dir=tmp_path / "ws", retry_backoff_s=0.5)
    return world


def test_compile_turns_a_valid_plan_into_the_signed_plan_card(repo: Path, tmp_path: Path) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=PLAN))
    ctx = world.context(
        StepId.COMPILE, repo, base_commit=_head(repo), intent_policy=Policy().to_json()
    )
    outcome = compile_step(ctx)
    assert outcome.ok, outcome.error
    assert outcome.plan_sha256 == APPROVED["plan_sha256"]
    assert [a.content for a in outcome.artifacts] == [canonical_bytes(PLAN)]
    assert outcome.workspace == ("kodo/run-1", str(tmp_path / "ws" / "run-1"))
    assert "Intent: Add a docstring to calc.py" in world.agent.sent[0].text


def test_compile_fails_closed_on_a_plan_that_names_a_forbidden_path(
    repo: Path, tmp_path: Path
) -> None:
    hostile = {**PLAN, "files": [{"path": ".env", "change": "add", "why": "secrets"}]}
    world = _compile_world(tmp_path, ScriptedTurn(answer=hostile))
    ctx = world.context(
        StepId.COMPILE, repo, base_commit=_head(repo), intent_policy=Policy().to_json()
    )
    outcome = compile_step(ctx)
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("the plan violates the repository policy")
    assert [a.name for a in outcome.artifacts] == ["diagnostic.json"]


def test_compile_stops_at_a_configuration_error_without_retrying(
    repo: Path, tmp_path: Path
) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(error=unknown_model()))
    ctx = world.context(
        StepId.COMPILE, repo, base_commit=_head(repo), intent_policy=Policy().to_json()
    )
    outcome = compile_step(ctx)
    assert outcome.error is not None
    assert outcome.error.startswith("configuration error, not retried")
    assert len(world.agent.sent) == 1


def test_compile_refuses_an_intent_without_a_pinned_policy() -> None:
    world = StepWorld(FakeAgent())
    outcome = compile_step(world.context(StepId.COMPILE, NOWHERE))
    assert outcome.error is not None
    assert "no policy or base commit" in outcome.error
    assert world.agent.sent == []


def test_apply_patch_refuses_to_modify_code_without_an_approval() -> None:
    world = StepWorld(FakeAgent())
    outcome = apply_patch_step(world.context(StepId.APPLY_PATCH, NOWHERE, worktree_path=NOWHERE))
    assert outcome.error == "no approval for the current plan: refusing to modify code"
    assert world.agent.sent == []


def test_apply_patch_refuses_a_plan_that_does_not_hash_to_its_approved_digest() -> None:
    world = StepWorld(FakeAgent())
    snapshot = {**APPROVED, "plan": None, "worktree_path": NOWHERE}
    outcome = apply_patch_step(world.context(StepId.APPLY_PATCH, NOWHERE, **snapshot))
    assert outcome.error is not None
    assert outcome.error.startswith("plan_matches_digest")


def test_decide_refuses_to_run_without_an_approved_plan() -> None:
    world = StepWorld(FakeAgent())
    outcome = decide_step(world.context(StepId.DECIDE, NOWHERE, worktree_path=NOWHERE))
    assert outcome.error == "approved_plan_required: decide needs an approved plan and a worktree"
    assert world.agent.sent == []


def _applied(repo: Path) -> None:
    (repo / "calc.py").write_text(CALC + "\n# applied\n")
    git(repo, "commit", "-q", "-am", "applied")


def test_decide_records_an_allowlisted_command(repo: Path) -> None:
    _applied(repo)
    decision = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
    world = StepWorld(FakeAgent(ScriptedTurn(answer=decision)))
    outcome = decide_step(world.context(StepId.DECIDE, repo, worktree_path=repo, **APPROVED))
    assert outcome.ok, outcome.error
    assert outcome.output["argv"] == ["pytest", "-q"]
    assert "calc.py" in world.agent.sent[0].text  # the applied diffstat is in the prompt


def test_decide_fails_closed_on_a_command_off_the_allowlist_without_another_try(
    repo: Path,
) -> None:
    _applied(repo)
    decision = {"next_action": "verify", "argv": ["rm", "-rf", "/"], "reason": "clean"}
    world = StepWorld(FakeAgent(ScriptedTurn(answer=decision)))
    outcome = decide_step(world.context(StepId.DECIDE, repo, worktree_path=repo, **APPROVED))
    assert outcome.error is not None
    assert "rm" in outcome.error
    assert len(world.agent.sent) == 1


def test_execute_refuses_to_run_without_a_decision() -> None:
    world = StepWorld(FakeAgent())
    outcome = execute_step(
        world.context(StepId.EXECUTE, NOWHERE, worktree_path=NOWHERE, **APPROVED)
    )
    assert outcome.error is not None
    assert outcome.error.endswith("execute needs an approved, decided run with a worktree")


def test_execute_refuses_a_decided_command_the_allowlist_no_longer_allows() -> None:
    world = StepWorld(FakeAgent())
    outputs = {StepId.DECIDE.value: {"argv": ["curl", "http://example.invalid"]}}
    ctx = world.context(StepId.EXECUTE, NOWHERE, worktree_path=NOWHERE, outputs=outputs, **APPROVED)
    outcome = execute_step(ctx)
    assert outcome.error is not None
    assert "curl" in outcome.error
    assert [a.name for a in outcome.artifacts] == ["diagnostic.json"]
