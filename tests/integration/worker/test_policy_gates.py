"""Per-repository gates fail runs closed, with the evidence, on real git repos.

Hostile patches go through ApplyPatchST against a real repository: what is judged is
what git says the patch changed, never what its text claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, commits_on_branch, diagnostic, new_run
from tests.integration.worker.hostile import commit_all, git_out, hostile, patch_of, plan_of

pytestmark = pytest.mark.integration


def _commit_policy(repo: Path, toml: str) -> None:
    (repo / ".kodo").mkdir(exist_ok=True)
    (repo / ".kodo" / "policy.toml").write_text(toml)
    commit_all(repo, "policy")


def _applied(
    rt: Runtime,
    repo: Path,
    plan: dict[str, Any],
    diff: str,
    goal: str = "Tidy the docs",
    files: list[str] | None = None,
) -> tuple[str, str]:
    """Compile the scripted plan, approve it, let the agent edit: (run id, outcome)."""
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(diff, files)
    run_id = new_run(rt, repo, goal=goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    return run_id, run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)


def _worktree(rt: Runtime, run_id: str) -> Path:
    return rt.settings.workspace_dir / run_id


def _assert_nothing_applied(rt: Runtime, repo: Path, run_id: str) -> None:
    assert commits_on_branch(repo, run_id) == 0
    status = git_out(_worktree(rt, run_id), "status", "--porcelain", "--untracked-files=all")
    assert status == "", "the refused patch was undone in the worktree"


def _rules(rt: Runtime, run_id: str) -> list[tuple[str, list[str]]]:
    return [(v["rule"], v["paths"]) for v in diagnostic(rt, run_id)["violations"]]


README_ONLY = plan_of({"path": "README.md", "change": "modify"})
README_EDIT = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
)


def test_a_plan_touching_a_forbidden_path_is_never_shown_for_approval(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, '[policy]\nextra_forbidden_paths = ["calc.py"]\n')
    run_id = new_run(rt, repo, goal="Add multiply to calc.py")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["violations"] == [
        {"rule": "forbidden_path", "detail": "calc.py matches calc.py", "paths": ["calc.py"]}
    ]
    assert report["policy"]["source"].startswith("refs/heads/main@")


def test_a_patch_over_the_line_budget_fails_closed_and_leaves_nothing_applied(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, "[policy]\nmax_lines = 1\n")
    run_id = new_run(rt, repo, goal="Add multiply to calc.py")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    assert [rule for rule, _ in _rules(rt, run_id)] == ["max_lines"]
    _assert_nothing_applied(rt, repo, run_id)


def test_a_patch_that_does_exactly_what_the_plan_says_is_committed(rt: Runtime, repo: Path) -> None:
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT)
    assert outcome == "deciding"
    assert commits_on_branch(repo, run_id) == 1


def test_a_headerless_unified_diff_to_a_forbidden_path_is_caught_by_its_effect(
    rt: Runtime, repo: Path
) -> None:
    headerless = "--- /dev/null\n+++ b/.github/workflows/ci.yml\n@@ -0,0 +1 @@\n+on: push\n"
    run_id, outcome = _applied(rt, repo, README_ONLY, headerless)
    assert outcome == "failed"
    assert _rules(rt, run_id) == [
        ("outside_plan", [".github/workflows/ci.yml"]),
        ("forbidden_path", [".github/workflows/ci.yml"]),
    ]
    _assert_nothing_applied(rt, repo, run_id)
    assert not (_worktree(rt, run_id) / ".github").exists()


def test_a_rename_into_github_workflows_is_caught_on_its_target_side(
    rt: Runtime, repo: Path
) -> None:
    (repo / "deploy.yml").write_text("on: push\njobs: {}\n")
    commit_all(repo, "a workflow-shaped file")
    rename = (
        "diff --git a/deploy.yml b/.github/workflows/deploy.yml\nsimilarity index 100%\n"
        "rename from deploy.yml\nrename to .github/workflows/deploy.yml\n"
    )
    plan = plan_of({"path": "deploy.yml", "change": "modify"})
    run_id, outcome = _applied(rt, repo, plan, rename)
    assert outcome == "failed"
    assert _rules(rt, run_id) == [
        ("outside_plan", [".github/workflows/deploy.yml"]),
        ("outside_plan", ["deploy.yml"]),
        ("forbidden_path", [".github/workflows/deploy.yml"]),
    ]
    changes = diagnostic(rt, run_id)["changes"]
    assert [(c["status"], c["from"], c["path"]) for c in changes] == [
        ("R", "deploy.yml", ".github/workflows/deploy.yml")
    ]
    _assert_nothing_applied(rt, repo, run_id)


def _symlink_diff(path: str, target: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 120000\n--- /dev/null\n+++ b/{path}\n"
        f"@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
    )


@pytest.mark.parametrize("target", ["/etc/passwd", "../../"])
def test_a_symlink_leading_out_of_the_worktree_is_refused_even_when_planned_and_allowed(
    rt: Runtime, repo: Path, target: str
) -> None:
    _commit_policy(repo, "[policy]\nallow_symlinks = true\n")
    plan = plan_of({"path": "docs/passwd", "change": "add"})
    run_id, outcome = _applied(rt, repo, plan, _symlink_diff("docs/passwd", target))
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("symlink", ["docs/passwd"])]
    assert target in diagnostic(rt, run_id)["violations"][0]["detail"]
    _assert_nothing_applied(rt, repo, run_id)
    assert not (_worktree(rt, run_id) / "docs" / "passwd").is_symlink()


def test_a_symlink_is_refused_by_default_even_inside_the_worktree(rt: Runtime, repo: Path) -> None:
    plan = plan_of({"path": "readme_link", "change": "add"})
    run_id, outcome = _applied(rt, repo, plan, _symlink_diff("readme_link", "README.md"))
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("symlink", ["readme_link"])]


def test_a_symlink_inside_the_worktree_is_committed_when_the_policy_allows_symlinks(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, "[policy]\nallow_symlinks = true\n")
    plan = plan_of({"path": "readme_link", "change": "add"})
    run_id, outcome = _applied(rt, repo, plan, _symlink_diff("readme_link", "README.md"))
    assert outcome == "deciding"
    assert commits_on_branch(repo, run_id) == 1


def _nested_repository(directory: Path) -> None:
    """A repository of its own inside the worktree: staged, git records a gitlink."""
    vendor = directory / "vendor"
    vendor.mkdir()
    (vendor / "lib.py").write_text("x = 1\n")
    git_out(vendor, "init", "-q")
    commit_all(vendor, "vendored")


def test_a_submodule_gitlink_is_refused(rt: Runtime, repo: Path) -> None:
    plan = plan_of({"path": "vendor", "change": "add"})
    hostile(rt).actions[StepId.APPLY_PATCH.value] = _nested_repository
    run_id, outcome = _applied(rt, repo, plan, "", files=["vendor"])
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("submodule", ["vendor"])]
    _assert_nothing_applied(rt, repo, run_id)


def test_a_patch_editing_a_file_the_plan_does_not_name_fails_closed_naming_it(
    rt: Runtime, repo: Path
) -> None:
    calc = (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        "@@ -3,3 +3,4 @@\n \n def add(a: int, b: int) -> int:\n+    print('hi')\n"
        "     return a + b\n"
    )
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT + calc)
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("outside_plan", ["calc.py"])]
    report = diagnostic(rt, run_id)
    assert "calc.py" in report["error"]
    _assert_nothing_applied(rt, repo, run_id)


def test_an_unplanned_test_file_is_refused_before_any_verification_could_run_it(
    rt: Runtime, repo: Path
) -> None:
    evil = (
        "diff --git a/test_evil.py b/test_evil.py\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/test_evil.py\n@@ -0,0 +1 @@\n+import os; os.system('id')\n"
    )
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT + evil)
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("outside_plan", ["test_evil.py"])]
    assert not (_worktree(rt, run_id) / "test_evil.py").exists()


def test_a_patch_deleting_a_file_the_plan_says_to_modify_is_outside_the_plan(
    rt: Runtime, repo: Path
) -> None:
    content = (repo / "calc.py").read_text().splitlines()
    delete = (
        "diff --git a/calc.py b/calc.py\ndeleted file mode 100644\n--- a/calc.py\n+++ /dev/null\n"
        f"@@ -1,{len(content)} +0,0 @@\n" + "".join(f"-{line}\n" for line in content)
    )
    plan = plan_of({"path": "calc.py", "change": "modify"})
    run_id, outcome = _applied(rt, repo, plan, delete, goal="Add multiply to calc.py")
    assert outcome == "failed"
    [violation] = diagnostic(rt, run_id)["violations"]
    assert violation["rule"] == "outside_plan"
    assert violation["detail"] == "calc.py: the plan says modify, the patch did delete"
    assert (_worktree(rt, run_id) / "calc.py").exists()


def test_a_planned_rename_is_committed_and_new_executables_are_reported(
    rt: Runtime, repo: Path
) -> None:
    diff = (
        "diff --git a/calc.py b/calculator.py\nsimilarity index 100%\n"
        "rename from calc.py\nrename to calculator.py\n"
        "diff --git a/run.sh b/run.sh\nnew file mode 100755\n--- /dev/null\n+++ b/run.sh\n"
        "@@ -0,0 +1 @@\n+echo hi\n"
    )
    plan = plan_of(
        {"path": "calculator.py", "change": "rename", "from": "calc.py"},
        {"path": "run.sh", "change": "add"},
    )
    run_id, outcome = _applied(rt, repo, plan, diff)
    assert outcome == "deciding"
    with rt.sessions() as s:
        output = s.execute(
            text("SELECT output FROM app.step_runs WHERE run_id = :r AND step_id = 'ApplyPatchST'"),
            {"r": run_id},
        ).scalar_one()
    assert output["new_executables"] == ["run.sh"]
    assert {(c["status"], c["path"]) for c in output["changes"]} == {
        ("R", "calculator.py"),
        ("A", "run.sh"),
    }


def test_a_policy_refusing_new_executables_fails_the_patch_that_adds_one(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, "[policy]\nallow_new_executables = false\n")
    script = (
        "diff --git a/run.sh b/run.sh\nnew file mode 100755\n--- /dev/null\n+++ b/run.sh\n"
        "@@ -0,0 +1 @@\n+echo hi\n"
    )
    plan = plan_of({"path": "run.sh", "change": "add"})
    run_id, outcome = _applied(rt, repo, plan, script)
    assert outcome == "failed"
    assert _rules(rt, run_id) == [("executable", ["run.sh"])]


def _redirect_gitdir(directory: Path) -> None:
    (directory / ".git").write_text("gitdir: /tmp/kodo-attacker-gitdir\n")


def test_an_agent_rewriting_the_worktrees_git_pointer_fails_closed_before_git_runs(
    rt: Runtime, repo: Path
) -> None:
    hostile(rt).actions[StepId.APPLY_PATCH.value] = _redirect_gitdir
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT)
    assert outcome == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "worktree_gitdir"
    assert commits_on_branch(repo, run_id) == 0


def test_decide_offers_only_the_policy_narrowed_allowlist_and_rejects_other_programs(
    rt: Runtime, repo: Path
) -> None:
    _commit_policy(repo, '[policy]\nexec_allowlist = ["make"]\n')
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT)
    assert outcome == "deciding"
    model = hostile(rt)
    model.scripts[StepId.DECIDE.value] = {
        "next_action": "verify",
        "argv": ["python3", "-c", "print('pwned')"],
        "reason": "r",
    }
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "failed"
    decide_prompts = [c.prompt for c in model.prompts if c.step_id == StepId.DECIDE.value]
    assert len(decide_prompts) == 1, "an answer outside the allowlist is not retried"
    assert "Allowed programs: make." in decide_prompts[0]
    report = diagnostic(rt, run_id)
    assert report["rule"] == "exec_allowlist"
    assert report["allowlist"] == ["make"]
    assert "'python3' is not on the allowlist (make)" in report["error"]
