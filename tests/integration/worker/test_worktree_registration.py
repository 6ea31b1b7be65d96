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

import fcntl
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker import git_ops
from services.worker.git_ops import (
    GitError,
    IndexLocked,
    WorktreeTampered,
    ensure_worktree,
    escaping_links,
    forget_registration,
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


def test_kodo_registers_a_worktree_exactly_as_git_would(tmp_path: Path) -> None:
    """kodo lays out the registration itself (``git worktree add`` reads every other
    registration, twice): git sees a locked worktree on the run's branch, clean, whose
    branch it refuses to delete, and which a prune keeps while its folder is away."""
    repo = create_sample_repo(tmp_path / "repo")
    head = _git(repo, "rev-parse", "HEAD").strip()
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", head)

    listed = _git(repo, "worktree", "list", "--porcelain").split("\n\n")
    mine = next(block for block in listed if f"worktree {tree.path.resolve()}" in block)
    assert f"HEAD {head}" in mine
    assert "branch refs/heads/kodo/run-1" in mine
    assert "locked kodo run run-1" in mine
    assert _git(tree.path, "status", "--porcelain", "--ignored") == ""
    assert sorted(_git(tree.path, "ls-files").split()) == sorted(_git(repo, "ls-files").split())
    refused = subprocess.run(
        ["git", "-C", str(repo), "branch", "-D", "kodo/run-1"], capture_output=True
    )
    assert refused.returncode != 0
    assert b"checked out" in refused.stderr
    _git(tree.path, "commit", "--allow-empty", "-qm", "a run's commit")
    assert _git(repo, "rev-parse", "kodo/run-1").strip() != head


def test_a_registration_cut_short_is_made_again(tmp_path: Path) -> None:
    """A delivery killed while registering leaves a record without its ``gitdir`` and a
    folder without its pointer: the next one clears both and registers afresh, on the
    branch the first one made."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    (tree.gitdir / "gitdir").unlink()
    (tree.gitdir / "index").unlink()
    (tree.path / ".git").unlink()
    (tree.path / "half-written.txt").write_text("x\n")
    _git(repo, "branch", "-f", "kodo/run-1", "HEAD")

    again = ensure_worktree(repo, ws, "run-1", "HEAD")

    assert again.gitdir == tree.gitdir
    assert (again.gitdir / "index").is_file()
    assert not (again.path / "half-written.txt").exists()
    assert _git(again.path, "status", "--porcelain", "--ignored") == ""


def test_a_record_of_another_worktree_by_the_runs_name_is_refused(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    _git(repo, "worktree", "add", "-q", str(tmp_path / "elsewhere" / "run-1"))

    with pytest.raises(GitError, match="record of another worktree"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert _git(tmp_path / "elsewhere" / "run-1", "status", "--porcelain") == ""


def test_a_link_put_where_the_worktree_goes_is_removed_not_followed(tmp_path: Path) -> None:
    """Another run's agent can write the workspaces folder: a symlink at the new run's
    folder must not carry the checkout, or its pointer, anywhere else."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    victim = tmp_path / "victim"
    victim.mkdir()
    ws.mkdir()
    (ws / "run-1").symlink_to(victim)

    tree = ensure_worktree(repo, ws, "run-1", "HEAD")

    assert not tree.path.is_symlink()
    assert list(victim.iterdir()) == []
    assert (tree.path / "calc.py").is_file()


def test_kodo_forgets_its_own_record_without_a_prune(tmp_path: Path) -> None:
    """kodo's record is removed by name (a prune reads every record); another worktree's
    lock is left alone."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    other = ensure_worktree(repo, ws, "run-2", "HEAD")
    subprocess.run(["rm", "-rf", str(tree.path), str(other.path)], check=True)

    forget_registration(repo, tree.path)

    assert not tree.gitdir.exists()
    assert (other.gitdir / "locked").is_file()


def test_a_record_git_itself_made_is_unlocked_and_pruned(tmp_path: Path) -> None:
    """An older kodo had ``git worktree add`` register the run (git may have named the
    record otherwise): it is found by what it names, unlocked and pruned."""
    repo = create_sample_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    _git(repo, "worktree", "add", "-q", str(tmp_path / "other" / "run-1"))
    path = tmp_path / "ws" / "run-1"
    _git(repo, "worktree", "add", "-q", "--lock", "-b", "kodo/run-1", str(path))
    record = repo / ".git" / "worktrees" / "run-11"
    assert (record / "locked").is_file()
    subprocess.run(["rm", "-rf", str(path)], check=True)

    forget_registration(repo, path)

    assert not record.exists()
    assert (repo / ".git" / "worktrees" / "run-1").is_dir()


def test_a_name_put_at_the_folder_while_registering_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a hostile agent would run: a folder or link made at the run's name right
    after kodo cleared it. kodo neither writes through it nor crashes: the rule is named."""
    repo = create_sample_repo(tmp_path / "repo")
    victim = tmp_path / "victim"
    victim.mkdir()
    cleared = git_ops._clear_unfinished

    def then_planted(
        workspace_dir: Path, path: Path, admin: Path, dotgit: Path, aside: list[Path]
    ) -> None:
        cleared(workspace_dir, path, admin, dotgit, aside)
        path.symlink_to(victim)

    monkeypatch.setattr(git_ops, "_clear_unfinished", then_planted)

    with pytest.raises(WorktreeTampered, match="taken while kodo registered it"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    assert list(victim.iterdir()) == []


def test_the_files_are_checked_out_out_of_the_daemons_reach_then_moved_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon may write the workspaces folder: a worktree checked out there could be
    raced (a FIFO at ``.gitattributes`` held the checkout, and the repository's lock,
    for GIT_TIMEOUT_S). It is checked out in ``<workspaces>.stage`` and appears whole."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    seen: list[tuple[Path, bool]] = []
    checkout = git_ops.checkout_head

    def watched(tree: git_ops.Worktree) -> None:
        seen.append((tree.path, (ws / "run-1").exists()))
        checkout(tree)

    monkeypatch.setattr(git_ops, "checkout_head", watched)

    tree = ensure_worktree(repo, ws, "run-1", "HEAD")

    assert seen == [(git_ops.stage_root(ws) / "run-1", False)]
    assert tree.path == ws / "run-1"
    assert list(git_ops.stage_root(ws).iterdir()) == []
    assert _git(tree.path, "status", "--porcelain", "--ignored") == ""


def test_a_record_whose_gitdir_was_cut_short_is_made_again(tmp_path: Path) -> None:
    """A crash (or a power loss: nothing is fsynced) can leave the record's ``gitdir``
    empty or half written: it is kodo's own, cleared, not taken for another worktree's."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    subprocess.run(["rm", "-rf", str(tree.path)], check=True)
    whole = (tree.gitdir / "gitdir").read_text()
    for cut in ("", whole[: len(whole) // 2]):
        (tree.gitdir / "gitdir").write_text(cut)

        again = ensure_worktree(repo, ws, "run-1", "HEAD")

        assert (again.gitdir / "gitdir").read_text() == whole
        subprocess.run(["rm", "-rf", str(again.path)], check=True)


def test_kodo_forgets_its_record_even_if_an_agent_made_the_folder_again(
    tmp_path: Path,
) -> None:
    """Cleanup removes the folder, then the record: a folder another run's agent made
    again in between (with a ``.git`` of its own) no longer keeps the record, or the
    run's branch, alive."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    pointer = (tree.path / ".git").read_bytes()
    subprocess.run(["rm", "-rf", str(tree.path)], check=True)
    tree.path.mkdir()
    (tree.path / ".git").write_bytes(pointer)

    forget_registration(repo, tree.path)

    assert not tree.gitdir.exists()
    _git(repo, "branch", "-D", "kodo/run-1")


def _stage_commit_and_reset(repo: Path, ws: Path) -> None:
    """A run's round trip on ``repo``: an edit staged and committed, then another undone."""
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    (tree.path / "calc.py").write_text("changed\n")

    assert [c.path for c in stage_edits(tree)] == ["calc.py"]
    commit = git_ops.commit_index(tree, "a run's commit")
    (tree.path / "calc.py").write_text("changed again\n")
    git_ops.reset_worktree(tree)

    assert _git(repo, "rev-parse", "kodo/run-1").strip() == commit
    assert (tree.path / "calc.py").read_text() == "changed\n"


@pytest.mark.parametrize("part", ["objects", "refs", "worktrees"])
@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_a_repository_whose_git_dir_parts_are_links_is_refused_naming_the_rule(
    tmp_path: Path, part: str, link: str
) -> None:
    """An ``objects``, ``refs`` or ``worktrees`` folder kept elsewhere behind a link was
    written through: kodo's branch went into whatever refs folder the link chose (another
    repository's), the ``git gc --auto`` after a cleanup pruned the objects folder it led
    to by this repository's refs, and a prune deleted through ``worktrees`` (red-team
    helper-104). kodo writes only into a repository's own git dir: refused (GitDirRefused,
    rule git_dir) before anything is written."""
    repo = create_sample_repo(tmp_path / "repo")
    (repo / ".git" / "worktrees").mkdir(exist_ok=True)
    moved = tmp_path / "elsewhere" / part
    moved.parent.mkdir()
    (repo / ".git" / part).rename(moved)
    target = moved if link == "absolute" else Path("..") / ".." / "elsewhere" / part
    (repo / ".git" / part).symlink_to(target)
    listed = sorted(p.name for p in moved.rglob("*"))

    with pytest.raises(git_ops.GitDirRefused, match=rf"git_dir: .*\.git/{part} is a link"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert sorted(p.name for p in moved.rglob("*")) == listed, "nothing written through it"
    assert not (tmp_path / "ws" / "run-1").exists()


def test_a_repository_borrowing_objects_from_another_still_runs(tmp_path: Path) -> None:
    """A ``clone --shared`` keeps its objects in the repository it was cloned from
    (``objects/info/alternates``): kodo's pinned git, which sees nothing of the host but
    the system and the repository's git dir, is shown those objects too (read-only)."""
    origin = create_sample_repo(tmp_path / "origin")
    repo = tmp_path / "repo"
    _git(tmp_path, "clone", "-q", "--shared", str(origin), str(repo))
    assert (repo / ".git" / "objects" / "info" / "alternates").is_file()
    _stage_commit_and_reset(repo, tmp_path / "ws")


@pytest.mark.parametrize("left", ["a checkout cut short", "a folder without a pointer"])
def test_a_leftover_folder_is_removed_once_the_repositorys_lock_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, left: str
) -> None:
    """What an unfinished registration left can be a folder another run's agent filled
    with millions of files: removed under the repository's lock, it held every run of
    the repository for as long as ``rm`` took. It is moved aside in one rename, and
    removed after."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    if left == "a checkout cut short":
        (tree.gitdir / "index").unlink()
    else:
        (tree.path / ".git").unlink()
    (tree.path / "filled").mkdir()
    (tree.path / "filled" / "junk").write_text("x\n")
    removals: list[tuple[str, bool]] = []
    remove = git_ops.remove_worktree_dir

    def spy(path: Path, workspaces: Path) -> None:
        with git_ops.lock_file(ws, repo).open("w") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = False
                fcntl.flock(probe, fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
        removals.append((path.parent.name, held))
        remove(path, workspaces)

    monkeypatch.setattr(git_ops, "remove_worktree_dir", spy)

    again = ensure_worktree(repo, ws, "run-1", "HEAD")

    assert (again.gitdir / "index").is_file()
    assert not (again.path / "filled").exists()
    assert ("ws.trash", False) in removals, removals
    assert all(not held for _, held in removals), removals
    assert list(git_ops.trash_root(ws).iterdir()) == []
