"""The step bodies against the fake daemon: what each answer makes of the step.

The agent and the ledger are in memory; git runs for real on a small repository in
``tmp_path`` (a step's work is git's work).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.worker.git_ops import ensure_worktree, git, tree_git
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.policy import Policy
from shared.domain.rounds import ChangeRequest, retry_input
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


def test_compile_asks_again_when_the_plan_disagrees_with_the_base_tree(
    repo: Path, tmp_path: Path
) -> None:
    """``modify CALC.py`` beside a tracked ``calc.py`` can never land as it reads (the
    patch would add a file the plan says it modifies), and an approver reads it as the
    tracked file: the model is told which entry disagrees and asked again; only the
    plan that agrees is shown."""
    twin = {**PLAN, "files": [{"path": "CALC.py", "change": "modify", "why": "docs"}]}
    world = _compile_world(tmp_path, ScriptedTurn(answer=twin), ScriptedTurn(answer=PLAN))
    ctx = world.context(
        StepId.COMPILE, repo, base_commit=_head(repo), intent_policy=Policy().to_json()
    )
    outcome = compile_step(ctx)
    assert outcome.ok, outcome.error
    assert outcome.plan_sha256 == APPROVED["plan_sha256"]
    assert len(world.agent.sent) == 2
    assert "plan_base: the plan's files disagree with the base tree" in world.agent.sent[1].text
    assert "CALC.py is not a file of the base tree" in world.agent.sent[1].text


def test_compile_fails_naming_plan_base_when_every_plan_disagrees(
    repo: Path, tmp_path: Path
) -> None:
    adds_tracked = {**PLAN, "files": [{"path": "calc.py", "change": "add", "why": "x"}]}
    world = _compile_world(tmp_path, *(ScriptedTurn(answer=adds_tracked) for _ in range(3)))
    ctx = world.context(
        StepId.COMPILE, repo, base_commit=_head(repo), intent_policy=Policy().to_json()
    )
    outcome = compile_step(ctx)
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("no valid plan after 3 attempts: the last was rejected")
    assert "plan_base: " in outcome.error
    assert "calc.py is a file of the base tree" in outcome.error
    assert outcome.plan_sha256 is None


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


def _applied(repo: Path) -> tuple[Path, dict[str, Any]]:
    """The run's worktree with a change committed as ApplyPatchST would, and the outputs
    a later step reads of it."""
    tree = ensure_worktree(repo, repo.parent / "ws", "run-1", "HEAD")
    (tree.path / "calc.py").write_text(CALC + "\n# applied\n")
    tree_git(tree, "commit", "-q", "-am", "applied", writes="repository")
    commit = git(tree, "rev-parse", "HEAD").strip()
    return tree.path, {StepId.APPLY_PATCH.value: {"commit": commit}}


def test_decide_records_an_allowlisted_command(repo: Path) -> None:
    worktree, outputs = _applied(repo)
    decision = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
    world = StepWorld(FakeAgent(ScriptedTurn(answer=decision)))
    outcome = decide_step(
        world.context(StepId.DECIDE, repo, worktree_path=worktree, outputs=outputs, **APPROVED)
    )
    assert outcome.ok, outcome.error
    assert outcome.output["argv"] == ["pytest", "-q"]
    assert "calc.py" in world.agent.sent[0].text  # the applied diffstat is in the prompt


def test_decide_shows_the_diffstat_apply_recorded_and_reads_no_git(
    repo: Path, tmp_path: Path
) -> None:
    """Both of DecideST's deliveries build the same prompt from what ApplyPatchST recorded
    beside the commit: no git runs, so a worktree gone meanwhile changes nothing."""
    _, outputs = _applied(repo)
    outputs[StepId.APPLY_PATCH.value]["diffstat"] = " recorded.py | 3 +++\n"
    decision = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
    world = StepWorld(FakeAgent(ScriptedTurn(answer=decision)))
    gone = tmp_path / "no-such-worktree"
    outcome = decide_step(
        world.context(StepId.DECIDE, repo, worktree_path=gone, outputs=outputs, **APPROVED)
    )
    assert outcome.ok, outcome.error
    assert "recorded.py | 3 +++" in world.agent.sent[0].text
    assert outcome.output["git_ms"] == 0


def test_decide_fails_closed_on_a_command_off_the_allowlist_without_another_try(
    repo: Path,
) -> None:
    worktree, outputs = _applied(repo)
    decision = {"next_action": "verify", "argv": ["rm", "-rf", "/"], "reason": "clean"}
    world = StepWorld(FakeAgent(ScriptedTurn(answer=decision)))
    outcome = decide_step(
        world.context(StepId.DECIDE, repo, worktree_path=worktree, outputs=outputs, **APPROVED)
    )
    assert outcome.error is not None
    assert "rm" in outcome.error
    assert len(world.agent.sent) == 1


def test_decide_without_the_judged_commit_fails_closed(repo: Path) -> None:
    worktree, _ = _applied(repo)
    world = StepWorld(FakeAgent())
    outcome = decide_step(world.context(StepId.DECIDE, repo, worktree_path=worktree, **APPROVED))
    assert outcome.error == "judged_commit_required: decide needs the commit ApplyPatchST judged"
    assert world.agent.sent == []


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


PINNED = Policy(verify_commands=(("pytest", "-q"),)).to_json()


def test_decide_asks_again_for_a_pinned_command_then_fails_naming_the_rule(repo: Path) -> None:
    """The prompt names the pinned commands; an answer with another is asked again, and
    once the attempts are spent the run fails under verify_pinned."""
    worktree, outputs = _applied(repo)
    noop = {"next_action": "verify", "argv": ["python3", "-c", "pass"], "reason": "quick"}
    world = StepWorld(FakeAgent(*[ScriptedTurn(answer=noop)] * 10))
    outputs[StepId.COMPILE.value] = {"policy": PINNED}  # the run's policy, fixed at compile
    ctx = world.context(StepId.DECIDE, repo, worktree_path=worktree, outputs=outputs, **APPROVED)
    outcome = decide_step(ctx)
    assert outcome.error is not None
    (diagnostic,) = outcome.artifacts
    assert json.loads(diagnostic.content)["rule"] == "verify_pinned"
    assert '- ["pytest", "-q"]' in world.agent.sent[0].text
    assert len(world.agent.sent) > 1, "asked again, told why"
    assert "verify_pinned" in world.agent.sent[1].text


def test_execute_refuses_a_decided_command_the_pinned_policy_does_not_list() -> None:
    world = StepWorld(FakeAgent())
    outputs = {
        StepId.COMPILE.value: {"policy": PINNED},
        StepId.DECIDE.value: {"argv": ["python3", "-c", "pass"]},
    }
    ctx = world.context(StepId.EXECUTE, NOWHERE, worktree_path=NOWHERE, outputs=outputs, **APPROVED)
    outcome = execute_step(ctx)
    assert outcome.error is not None
    assert outcome.error.startswith("verify_pinned: ")
    assert [a.name for a in outcome.artifacts] == ["diagnostic.json"]


REVISED = {**PLAN, "design": "Document add() and its edge cases."}


def _revision_context(world: StepWorld, repo: Path, **overrides: Any) -> Any:
    """CompileST's round 2: the reviewer sent PLAN back with a comment."""
    request = ChangeRequest(
        revision=2,
        comment="Cover the edge cases too.",
        requested_by="rita",
        previous_plan_sha256=APPROVED["plan_sha256"],
        earlier_plans=(APPROVED["plan_sha256"],),
    )
    fields: dict[str, Any] = {
        "base_commit": _head(repo),
        "intent_policy": Policy().to_json(),
        "plan": PLAN,
        "plan_sha256": APPROVED["plan_sha256"],
        "round": 2,
        "attempt_base": 3,
        "round_input": request.to_json(),
        **overrides,
    }
    return world.context(StepId.COMPILE, repo, **fields)


def test_a_revision_quotes_the_comment_and_the_previous_plan_under_new_attempt_numbers(
    repo: Path, tmp_path: Path
) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=REVISED))
    outcome = compile_step(_revision_context(world, repo))
    assert outcome.ok, outcome.error
    assert outcome.plan_sha256 == sha256_hex(canonical_bytes(REVISED))
    assert outcome.output["revision"] == 2
    prompt = world.agent.sent[0].text
    assert "Cover the edge cases too." in prompt
    assert '"design":"Document add()."' in prompt, "the plan being revised, as signed"
    assert [r["attempt"] for r in outcome.output["attempts"]] == [4], "after the ledger's 3"


def test_a_revision_identical_to_an_earlier_plan_is_rejected_and_asked_again(
    repo: Path, tmp_path: Path
) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=PLAN), ScriptedTurn(answer=REVISED))
    outcome = compile_step(_revision_context(world, repo))
    assert outcome.ok, outcome.error
    assert outcome.plan_sha256 == sha256_hex(canonical_bytes(REVISED))
    assert [(r["attempt"], r["status"]) for r in outcome.output["attempts"]] == [
        (4, "rejected"),
        (5, "succeeded"),
    ]
    assert "identical to an earlier revision" in world.agent.sent[1].text


def test_a_revision_whose_plan_is_not_the_one_commented_on_fails_closed(
    repo: Path, tmp_path: Path
) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=REVISED))
    outcome = compile_step(_revision_context(world, repo, plan_sha256="f" * 64))
    assert outcome.error is not None
    assert outcome.error.startswith("round_input:")
    assert world.agent.sent == [], "nothing is paid for on a round that does not add up"


def test_a_revision_without_a_readable_request_fails_closed(repo: Path, tmp_path: Path) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=REVISED))
    outcome = compile_step(_revision_context(world, repo, round_input={"kind": "other"}))
    assert outcome.error is not None
    assert "not a change request" in outcome.error
    assert world.agent.sent == []


def test_a_retried_revision_is_still_the_revision(repo: Path, tmp_path: Path) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=REVISED))
    request = _revision_context(world, repo).round_input
    ctx = _revision_context(
        world, repo, round=3, attempt_base=6, round_input=retry_input("ops", "down", request)
    )
    outcome = compile_step(ctx)
    assert outcome.ok, outcome.error
    assert outcome.output["revision"] == 2
    assert "Cover the edge cases too." in world.agent.sent[0].text
    assert [r["attempt"] for r in outcome.output["attempts"]] == [7]


def test_a_retried_first_plan_is_planned_from_the_intent_alone(repo: Path, tmp_path: Path) -> None:
    world = _compile_world(tmp_path, ScriptedTurn(answer=PLAN))
    ctx = world.context(
        StepId.COMPILE,
        repo,
        base_commit=_head(repo),
        intent_policy=Policy().to_json(),
        round=2,
        attempt_base=3,
        round_input=retry_input("ops", "the daemon was down", None),
    )
    outcome = compile_step(ctx)
    assert outcome.ok, outcome.error
    assert outcome.output["revision"] == 1
    assert "reviewer" not in world.agent.sent[0].text
