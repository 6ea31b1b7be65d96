"""A run's worktree registration outlives what agents and crashes do to its folder.

* Registered locked: any run's agent may delete another run's ``.git``, and the next
  ``git worktree prune`` (any run's private checkout makes one) would otherwise drop
  that run's git dir from the repository for good.
* An index a git that never finished left locked is named (``worktree_index_lock``).
* A checkout that never finished (a delivery killed inside ``git worktree add``, or by
  its timeout on a large repository) is made again, not reused: it holds part of the
  base at best, and the base's symlink check resolves links on disk.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    IndexLocked,
    ensure_worktree,
    escaping_links,
    open_worktree,
    stage_edits,
    tree_git,
    unlock_registration,
)
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, diagnostic, new_run

pytestmark = pytest.mark.integration

IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost"]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *IDENT, *args], capture_output=True, check=True)
    return done.stdout.decode()


def test_another_runs_prune_does_not_drop_a_run_whose_pointer_was_deleted(
    tmp_path: Path,
) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    ensure_worktree(repo, ws, "attacker", "HEAD")
    victim = ensure_worktree(repo, ws, "victim", "HEAD")
    pointer = (victim.path / ".git").read_bytes()
    (victim.path / ".git").unlink()  # the attacker's agent
    _git(repo, "worktree", "prune")  # as any run's cleanup does
    (victim.path / ".git").write_bytes(pointer)

    assert open_worktree(victim.path, repo).gitdir == victim.gitdir


def test_a_registration_kodo_unlocked_is_pruned_once_its_folder_is_gone(
    tmp_path: Path,
) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    subprocess.run(["rm", "-rf", str(tree.path)], check=True)
    _git(repo, "worktree", "prune")
    assert tree.gitdir.is_dir(), "locked: kept"

    unlock_registration(repo, tree.path)
    _git(repo, "worktree", "prune")

    assert not tree.gitdir.exists()


def test_a_checkout_that_never_finished_is_made_again(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    (repo / "w").symlink_to("..")
    for i in range(50):
        (repo / f"f{i:02}.txt").write_text(f"{i}\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "many files and a link out")
    files = sorted(_git(repo, "ls-files").split())
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    # What git 2.39 leaves when `git worktree add` is killed in its checkout (seen with
    # a 20,000-file repository and `timeout -s KILL`): the pointer, HEAD, commondir,
    # gitdir, locked, logs and index.lock in the git dir, no index, part of the files.
    (tree.gitdir / "index").unlink()
    (tree.gitdir / "index.lock").write_bytes(b"")
    for name in [*files[::2], "w"]:
        (tree.path / name).unlink(missing_ok=True)

    again = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert (again.gitdir / "index").is_file()
    assert not (again.gitdir / "index.lock").exists()
    assert sorted(p.name for p in again.path.iterdir() if p.name != ".git") == files
    assert tree_git(again, "status", "--porcelain", "--ignored") == ""
    assert escaping_links(again) == [("w", "..")]


def test_a_finished_checkout_is_reused_as_it_is(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "notes.txt").write_text("the plan agent's scratch\n")

    again = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert again == tree
    assert (again.path / "notes.txt").exists()


def test_an_index_left_locked_by_a_git_that_never_finished_is_named(tmp_path: Path) -> None:
    """A git of kodo's killed at its timeout (or with its worker) leaves the index's lock;
    every later git writing the index then fails. The failure names its rule, for the
    operator to remove the lock once no git runs there."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.gitdir / "index.lock").write_bytes(b"")
    (tree.path / "README.md").write_text("changed\n")

    with pytest.raises(IndexLocked) as caught:
        stage_edits(tree)

    assert caught.value.rule == "worktree_index_lock"
    assert str(caught.value).startswith("worktree_index_lock: git add")
    assert "index.lock" in str(caught.value)


def test_a_build_on_a_locked_index_fails_naming_the_rule(rt: Runtime, repo: Path) -> None:
    run_id = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    gitdir = open_worktree(rt.settings.workspace_dir / run_id, repo).gitdir
    (gitdir / "index.lock").write_bytes(b"")  # what a killed git left

    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"
    assert diagnostic(rt, run_id)["rule"] == "worktree_index_lock"
