"""An intent pins its repository, base commit and policy at submit; steps hold to them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.db.models import Intent
from shared.domain.policy import DEFAULT_FORBIDDEN, Policy
from shared.domain.run_machine import StepId
from shared.errors import InvalidInput, InvalidPolicy
from shared.service.runs import resolve_repo, start_run, submit_intent
from tests.integration.worker.conftest import diagnostic, uow
from tests.integration.worker.hostile import commit_all, git_out

pytestmark = pytest.mark.integration


def _policy(repo: Path, toml: str | None, message: str) -> str:
    target = repo / ".kodo" / "policy.toml"
    if toml is None:
        target.unlink(missing_ok=True)
    else:
        target.parent.mkdir(exist_ok=True)
        target.write_text(toml)
    (repo / "history.txt").write_text(message)  # every commit changes something
    return commit_all(repo, message)


def _submit(rt: Runtime, repo: Path, base_ref: str = "HEAD", **kw: str) -> Intent:
    with uow(rt) as work:
        intent = submit_intent(
            work,
            repo=repo,
            goal="Add multiply to calc.py",
            base_ref=base_ref,
            submitted_by="t",
            **kw,
        )
        return intent


def _start(rt: Runtime, intent_id: str) -> None:
    with uow(rt) as work:
        start_run(work, intent_id, app_version="test", now=rt.clock.now())


def test_an_older_weaker_policy_at_base_ref_is_combined_with_the_default_branchs(
    rt: Runtime, repo: Path
) -> None:
    _policy(repo, "[policy]\nmax_lines = 5000\n", "the old, weak policy")
    _policy(repo, "[policy]\nmax_lines = 5000\n", "still weak")
    _policy(repo, '[policy]\nextra_forbidden_paths = ["calc.py"]\nmax_lines = 40\n', "strict")
    intent = _submit(rt, repo, base_ref="HEAD~2")
    assert intent.base_commit == git_out(repo, "rev-parse", "HEAD~2")
    assert intent.policy is not None
    policy = Policy.from_json(intent.policy)
    assert "calc.py" in policy.forbidden_paths
    assert policy.max_lines == 40
    assert "refs/heads/main@" in policy.source
    assert "HEAD~2@" in policy.source
    _start(rt, intent.id)
    assert run_step(rt, StepId.COMPILE, intent.id, compile_step) == "failed"
    assert [v["rule"] for v in diagnostic(rt, intent.id)["violations"]] == ["forbidden_path"]


def test_a_stricter_policy_at_base_ref_still_counts_when_the_default_branch_is_weaker(
    rt: Runtime, repo: Path
) -> None:
    git_out(repo, "checkout", "-q", "-b", "feature")
    _policy(repo, '[policy]\nexec_allowlist = ["make"]\nmax_files = 3\n', "strict feature")
    git_out(repo, "checkout", "-q", "main")
    intent = _submit(rt, repo, base_ref="feature")
    assert intent.policy is not None
    policy = Policy.from_json(intent.policy)
    assert (policy.exec_allowlist, policy.max_files) == (("make",), 3)
    assert policy.forbidden_paths == DEFAULT_FORBIDDEN


def test_the_operator_may_name_the_trusted_policy_ref(rt: Runtime, repo: Path) -> None:
    git_out(repo, "checkout", "-q", "-b", "policy")
    _policy(repo, "[policy]\nmax_files = 2\n", "operator's policy")
    git_out(repo, "checkout", "-q", "main")
    plain = Policy.from_json(_submit(rt, repo).policy or {})
    pinned = Policy.from_json(_submit(rt, repo, policy_ref="refs/heads/policy").policy or {})
    assert (plain.max_files, pinned.max_files) == (50, 2)


@pytest.mark.parametrize("where", ["default branch", "base_ref"])
def test_a_malformed_policy_at_either_ref_refuses_the_submit_naming_file_and_ref(
    rt: Runtime, repo: Path, where: str
) -> None:
    if where == "default branch":
        _policy(repo, "[policy]\nmax_lines = 'lots'\n", "broken on main")
        base_ref, ref_named = "HEAD", "refs/heads/main"
    else:
        git_out(repo, "checkout", "-q", "-b", "broken")
        _policy(repo, "[policy\n", "not even TOML")
        git_out(repo, "checkout", "-q", "main")
        base_ref, ref_named = "broken", "broken"
    with pytest.raises(InvalidPolicy) as refused:
        _submit(rt, repo, base_ref=base_ref)
    assert refused.value.http_status == 422
    assert f".kodo/policy.toml at {ref_named} (" in refused.value.message


def test_an_unknown_base_ref_is_refused(rt: Runtime, repo: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown base_ref"):
        _submit(rt, repo, base_ref="no-such-branch")


def test_the_worktree_starts_at_the_commit_pinned_at_submit_not_where_the_ref_moved(
    rt: Runtime, repo: Path
) -> None:
    intent = _submit(rt, repo, base_ref="main")
    pinned = intent.base_commit
    _policy(repo, None, "main moves on after submit")
    _start(rt, intent.id)
    assert run_step(rt, StepId.COMPILE, intent.id, compile_step) == "waiting_input"
    worktree = rt.settings.workspace_dir / intent.id
    assert git_out(worktree, "rev-parse", "HEAD") == pinned


def test_the_resolved_path_is_recorded_not_the_symlink_submitted(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(repo)
    real = resolve_repo(str(alias), (tmp_path,))
    intent = _submit(rt, real)
    assert intent.repo_path == str(repo.resolve())
    st = os.stat(repo)
    assert (intent.repo_device, intent.repo_inode) == (st.st_dev, st.st_ino)


def test_a_repository_swapped_for_a_symlink_after_submit_is_refused(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    intent = _submit(rt, repo)
    _start(rt, intent.id)
    elsewhere = create_sample_repo(tmp_path / "attacker")
    repo.rename(tmp_path / "calc.orig")
    repo.symlink_to(elsewhere)
    assert run_step(rt, StepId.COMPILE, intent.id, compile_step) == "failed"
    report = diagnostic(rt, intent.id)
    [violation] = report["violations"]
    assert violation["rule"] == "repo_pinning"
    assert str(elsewhere) in violation["detail"]
    assert not (rt.settings.workspace_dir / intent.id).exists(), "no worktree was made"


def test_another_directory_put_at_the_same_path_after_submit_is_refused(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    intent = _submit(rt, repo)
    _start(rt, intent.id)
    shutil.copytree(repo, tmp_path / "copy", symlinks=True)
    shutil.rmtree(repo)
    (tmp_path / "copy").rename(repo)
    assert run_step(rt, StepId.COMPILE, intent.id, compile_step) == "failed"
    [violation] = diagnostic(rt, intent.id)["violations"]
    assert violation["rule"] == "repo_pinning"
    assert "another directory" in violation["detail"]


def test_new_commits_in_the_same_repository_after_submit_keep_the_pin(
    rt: Runtime, repo: Path
) -> None:
    """The pin is the directory, not its contents."""
    intent = _submit(rt, repo)
    _policy(repo, None, "someone commits meanwhile")
    _start(rt, intent.id)
    assert run_step(rt, StepId.COMPILE, intent.id, compile_step) == "waiting_input"
