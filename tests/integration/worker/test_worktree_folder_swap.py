"""A hostile agent swaps a run's whole worktree folder for a symlink.

The workspaces folder is the daemon's to write, so a daemon ignoring its rules can move
``<workspaces>/<run>`` aside at any moment and leave a symlink to any folder in its
place: a folder of kodo's (standing in for ``~/.ssh``), or the user's own repository.
kodo's git there would copy that folder's files into the repository's objects (which
the daemon may read), and an undo (``reset --hard``, ``clean -ffdqx``) would overwrite
and delete its files. kodo holds the worktree by the folder it verified (device and
inode, a descriptor; git gets the descriptor bound at a private mount point): after a
swap it either still works on the run's own folder or fails closed naming the rule,
and never touches the symlink's target.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    WorktreeTampered,
    ensure_worktree,
    escaping_links,
    reset_worktree,
    stage_edits,
)
from services.worker.runtime import Runtime
from tests.integration.worker.racing import Racers, run_through

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's"),
]

SECRET = b"kodo-only secret: never shown to the agent\n"


def _in_objects(repo: Path, data: bytes) -> bool:
    blob = subprocess.run(
        ["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True
    ).stdout.decode()
    seen = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", blob.strip()], check=False)
    return seen.returncode == 0


def _kodos_folder(folder: Path) -> Path:
    """A folder kodo can write and the agent cannot see (a stand-in for ~/.ssh)."""
    folder.mkdir()
    (folder / "secret.txt").write_bytes(SECRET)
    return folder


def _swap(worktree: Path, target: Path) -> None:
    worktree.rename(worktree.with_name(f".{worktree.name}.aside"))
    worktree.symlink_to(target)


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    return create_sample_repo(tmp_path / "repo"), _kodos_folder(tmp_path / "home")


def test_staging_after_the_folder_was_swapped_fails_closed_and_reads_nothing_there(
    checkout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, home = checkout
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    _swap(tree.path, home)

    with pytest.raises(WorktreeTampered, match="worktree_gitdir"):
        stage_edits(tree)

    assert not _in_objects(repo, SECRET)


@pytest.mark.parametrize("to_repo", [False, True], ids=["kodos_folder", "users_repository"])
def test_undoing_after_the_folder_was_swapped_fails_closed_and_deletes_nothing(
    checkout: tuple[Path, Path], tmp_path: Path, to_repo: bool
) -> None:
    repo, home = checkout
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (repo / "wip.txt").write_text("a day of uncommitted work\n")
    _swap(tree.path, repo if to_repo else home)

    with pytest.raises(WorktreeTampered, match="worktree_gitdir"):
        reset_worktree(tree)

    assert sorted(p.name for p in home.iterdir()) == ["secret.txt"]
    assert (repo / "wip.txt").exists()


def test_a_folder_swapped_for_another_folder_is_refused_too(tmp_path: Path) -> None:
    """Not a link but a folder of the agent's own under the run's name: not the folder
    kodo verified (another inode)."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    tree.path.rename(tmp_path / "ws" / ".aside")
    tree.path.mkdir()

    with pytest.raises(WorktreeTampered, match="replaced"):
        stage_edits(tree)


def test_a_moved_folder_is_still_the_one_git_works_on(tmp_path: Path) -> None:
    """Once git runs, it has the verified folder itself: a swap after that changes
    nothing (here: staged from the run's folder though its name now leads elsewhere)."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "README.md").write_text("the run's own edit\n")
    assert [c.path for c in stage_edits(tree)] == ["README.md"]


def test_a_link_judged_below_the_verified_folder_not_its_name(tmp_path: Path) -> None:
    """``escaping_links`` follows links below a descriptor of the folder: a swap of the
    name cannot make ``w -> ..`` look inside."""
    repo = create_sample_repo(tmp_path / "repo")
    (repo / "w").symlink_to("..")
    subprocess.run(["git", "-C", str(repo), "add", "w"], check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-qm", "w"], check=True)
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert escaping_links(tree) == [("w", "..")]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("target", ["kodos_folder", "users_repository"])
def test_a_hostile_agent_cannot_point_kodos_git_at_a_folder_outside_its_worktree(
    rt: Runtime, repo: Path, tmp_path: Path, target: str, k: int
) -> None:
    """The build agent edits README.md as planned and leaves a process that swaps its
    worktree folder for a symlink after the K-th read of the worktree's ``.git`` (kodo
    checks the pointer before it works there). The run goes on in its own folder or
    fails closed; the target keeps every file, and none of them reaches the objects."""
    if target == "kodos_folder":
        victim = _kodos_folder(tmp_path / "home")
    else:  # the user's own repository, with uncommitted work in it
        victim = repo
        (repo / "secret.txt").write_bytes(SECRET)
        (repo / "README.md").write_text("edited by the user, not committed yet\n")
    kept = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()}

    with Racers() as racers:
        run_through(rt, repo, "folder", victim, k, racers)

    assert {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()} == kept
    assert not _in_objects(repo, SECRET)
