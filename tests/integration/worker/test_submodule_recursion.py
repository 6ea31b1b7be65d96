"""A repository whose own config says ``submodule.recurse = true`` (a common setting) and
a submodule folder an agent filled with a git dir of its own.

kodo blanks the command-valued keys of the repository's config; recursion was not one
of them, so kodo's undo (``git reset --hard``) recursed into the submodule and ran
``read-tree -u`` under the planted git dir's config: its smudge filter ran as kodo
(root, in a bwrap that binds /), and git moved the agent's git dir into the user's
repository. kodo's git never recurses into a submodule now (shared.gitcmd.HARDENED).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import ensure_worktree, reset_worktree
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, new_run
from tests.integration.worker.hostile import IDENT, commit_all, hostile, patch_of, plan_of

pytestmark = pytest.mark.integration

ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", *IDENT, "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env=ENV,
    )


def _with_submodule(repo: Path, lib: Path) -> None:
    """The user's repository, with a submodule and ``submodule.recurse`` in its config."""
    lib.mkdir()
    (lib / "lib.py").write_text("x = 1\n")
    _git(lib, "init", "-q")
    commit_all(lib, "lib")
    _git(repo, "submodule", "add", "-q", str(lib), "sub")
    commit_all(repo, "submodule")
    _git(repo, "config", "submodule.recurse", "true")


def _plant(worktree: Path, repo: Path, proof: Path) -> None:
    """What the daemon does: it may write the worktree and read the user's repository."""
    sub = worktree / "sub"
    if sub.exists():
        sub.rmdir()  # the unpopulated submodule's empty folder
    # a git dir of its own beside the worktree (the workspaces folder is the daemon's),
    # reached by a symlink: git resolves it before it "absorbs" the git dir into the
    # repository, so the move is made on one mount, not out of kodo's pinned bind
    gitdir = worktree.parent / f".{worktree.name}-sub.git"
    _git(worktree, "clone", "-q", "--bare", str(repo / ".git" / "modules" / "sub"), str(gitdir))
    _git(gitdir, "config", "core.bare", "false")
    sub.mkdir()
    (sub / ".git").symlink_to(gitdir)
    _git(sub, "reset", "-q", "--hard")
    evil = f"sh -c 'id > {proof}; cat'"
    _git(sub, "config", "filter.evil.smudge", evil)
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "attributes").write_text("* filter=evil\n")
    (sub / "lib.py").write_text("dirty\n")  # so read-tree has something to write


def test_kodos_undo_runs_an_agent_filter_through_a_recursing_submodule(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    _with_submodule(repo, tmp_path / "lib")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    proof = tmp_path / "PWNED"
    _plant(tree.path, repo, proof)

    reset_worktree(tree)

    assert not proof.exists(), f"the agent's smudge filter ran as kodo: {proof.read_text()}"
    assert not (tree.gitdir / "modules" / "sub").exists(), "agent's git dir moved into the repo"


def test_a_planted_submodule_git_dir_makes_kodos_undo_run_the_agents_filter(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    """End to end: the daemon plants the submodule git dir while it plans; the build step's
    undo before its call (``reset_worktree``) runs its program."""
    _with_submodule(repo, tmp_path / "lib")
    proof = tmp_path / "PWNED"
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    edit = (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        '@@ -1 +1 @@\n-"""A tiny calculator."""\n+"""A calculator."""\n'
    )
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(edit)
    # the daemon plants it while it plans (or any other run's agent does, at any time):
    # ApplyPatchST's first undo, before the build agent's call, runs it
    model.actions[StepId.COMPILE.value] = lambda wt: _plant(wt, repo, proof)
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    outcome = run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)

    assert not proof.exists(), f"the agent's smudge filter ran as kodo: {proof.read_text()}"
    assert not (repo / ".git" / "worktrees" / run_id / "modules").exists()
    assert outcome in {"deciding", "failed"}


def test_a_repository_that_recurses_into_submodules_still_gets_its_change(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    """The same config with no attack: the build's undo and staging work (they failed
    with an unnamed "could not reset submodule index" while git recursed)."""
    _with_submodule(repo, tmp_path / "lib")
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
    )
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)

    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
