"""kodo's pinned git sees the system, the repository's git dir and the run's own folder,
and nothing else of the host (services.worker.git_ops.git_root).

Another run's agent can swap a folder of the worktree for a link while git works in it,
and every later name git opens there goes through the link: what git can reach at all is
what such a link can show it. Red-team passes staged a root-only file from outside, and
had ``git status`` list other runs' records by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.cli.doctor import check_sandbox
from services.worker import git_ops
from services.worker.git_ops import (
    GitDirRefused,
    PinUnavailable,
    commit_index,
    ensure_worktree,
    stage_edits,
    tree_git,
)
from services.worker.worktree_guard import names_below
from shared.config import Settings
from tests.integration.worker.hostile import git_out

pytestmark = pytest.mark.integration

IDENT = ("-c", "user.name=t", "-c", "user.email=t@localhost")


@pytest.fixture
def no_cached_git() -> Iterator[None]:
    git_ops.sandbox_git.cache_clear()
    yield
    git_ops.sandbox_git.cache_clear()


def test_a_pinned_git_reads_its_own_record_but_no_other_runs(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    mine = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    other = ensure_worktree(repo, tmp_path / "ws", "run-2", "HEAD")

    own = tree_git(mine, "hash-object", str(mine.gitdir / "HEAD"), check=False)
    theirs = tree_git(mine, "hash-object", str(other.gitdir / "HEAD"), check=False)
    config = tree_git(mine, "hash-object", str(repo / ".git" / "config"), check=False)

    assert own.strip() == git_out(repo, "hash-object", str(mine.gitdir / "HEAD"))
    assert theirs == "", "another run's record is not there"
    assert config.strip(), "the repository's git dir is (git reads its config)"


def test_a_pinned_git_sees_nothing_of_the_host_beyond_the_system(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for git\n")

    assert tree_git(tree, "hash-object", str(outside), check=False) == ""
    assert tree_git(tree, "hash-object", "/usr/bin/env", check=False).strip()


def test_the_root_of_a_pinned_git_has_no_network_processes_or_powers(tmp_path: Path) -> None:
    """What git would share with the host if it ever ran code: no network (Postgres and
    Redis listen on loopback), no other process, no capability but reading and writing
    files others own. Probed by a program started in the very same root."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    probe = (
        "import os, socket\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.1', 6379)); print('net')\nexcept OSError: pass\n"
        "print('pid', os.getpid())\n"
        "try:\n    os.setuid(4321); print('setuid')\nexcept PermissionError: pass\n"
    )
    argv = [
        "bwrap",
        *git_ops._confinement(),
        *git_ops.git_root(tree, "objects"),
        "--die-with-parent",
        "/usr/bin/python3", "-S", "-c", probe,
    ]  # fmt: skip

    said = subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout.decode()

    assert "net" not in said.split()
    assert "setuid" not in said.split()
    assert int(said.split("pid ")[1].split()[0]) < 10, "a pid namespace of its own"


def test_a_git_outside_the_system_folders_is_refused_not_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cached_git: None
) -> None:
    """A git in a home folder or /opt would need its folder bound, which could be the
    whole home (or the whole host, a red-team pass found): kodo refuses to pin."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    home_bin = tmp_path / "home" / "bin"
    home_bin.mkdir(parents=True)
    shutil.copy2("/usr/bin/git", home_bin / "git")
    monkeypatch.setenv("PATH", f"{home_bin}{os.pathsep}/nowhere")

    with pytest.raises(PinUnavailable, match="sandbox_required"):
        tree_git(tree, "status")


def test_a_system_git_behind_a_link_elsewhere_is_run_by_its_real_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cached_git: None
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / "git").symlink_to("/usr/bin/git")
    monkeypatch.setenv("PATH", f"{links}{os.pathsep}/nowhere")

    assert git_ops.sandbox_git() == str(Path("/usr/bin/git").resolve())


def test_config_the_repository_includes_from_elsewhere_still_applies(tmp_path: Path) -> None:
    """``include.path`` naming a file outside the git dir (here a tracked one): pinned git
    is shown that file, so it stages what kodo's other git, and the user's, would."""
    repo = create_sample_repo(tmp_path / "repo")
    (repo / ".gitconfig").write_text("[core]\n\tautocrlf = input\n")
    git_out(repo, "config", "include.path", "../.gitconfig")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "crlf.txt").write_bytes(b"a\r\nb\r\n")

    stage_edits(tree)
    commit = commit_index(tree, "crlf")

    shown = subprocess.run(["git", "show", f"{commit}:crlf.txt"], cwd=repo, capture_output=True)
    assert shown.stdout == b"a\nb\n"


def test_a_repository_whose_config_is_a_link_is_refused_naming_the_rule(tmp_path: Path) -> None:
    """A config kept behind a link was read (and a SHA-256 repository's is needed by the
    pinned git), but git's lock files replace the file a link names: ``git config``
    through it rewrote a file outside the repository. kodo writes only into a
    repository's own git dir (rule git_dir, red-team helper-105)."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "--object-format=sha256", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    git_out(repo, "add", "a.txt")
    git_out(repo, *IDENT, "commit", "-q", "-m", "base")
    kept = tmp_path / "elsewhere" / "config"
    kept.parent.mkdir()
    (repo / ".git" / "config").rename(kept)
    (repo / ".git" / "config").symlink_to(kept)
    with pytest.raises(GitDirRefused, match=r"git_dir: .*\.git/config is a link"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def test_names_git_listed_through_a_link_are_counted_not_shown(tmp_path: Path) -> None:
    """Whatever the name: git quotes one with a tab or a byte past ASCII, and a quoted
    name once passed unchecked (a red-team pass listed branch names below ``u\u00e9``)."""
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x").write_text("x\n")
    (root / "q\tx").write_text("a tab in its name\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "run-2").write_text("another run\n")
    (root / "u").symlink_to(tmp_path / "elsewhere")
    (root / "u\u00e9").symlink_to(tmp_path / "elsewhere")
    listed = ["a/x", "u/run-2", "q\tx", "u\u00e9/run-2", "a/"]
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        shown, hidden = names_below(folder, listed, 20)
    finally:
        os.close(folder)

    assert shown == ["a/x", "q\tx", "a/"]
    assert hidden == 2


def test_kodo_doctor_names_a_git_kodo_cannot_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cached_git: None
) -> None:
    home_bin = tmp_path / "home" / "bin"
    home_bin.mkdir(parents=True)
    shutil.copy2("/usr/bin/git", home_bin / "git")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "bwrap").symlink_to(shutil.which("bwrap") or "/usr/bin/bwrap")
    monkeypatch.setenv("PATH", f"{home_bin}{os.pathsep}{tools}")

    check = check_sandbox(Settings())

    assert not check.ok
    assert "no git on PATH is installed in /usr" in check.detail


def _writable_in_root(tree: git_ops.Worktree, writes: git_ops.Writes, paths: list[Path]) -> str:
    """Which of ``paths`` a program in a pinned git's root (``writes``) can append to."""
    probe = (
        "import sys\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        open(p, 'ab').close(); print('writable', p)\n"
        "    except OSError as e: print('refused', p, e.errno)\n"
    )
    argv = [
        "bwrap",
        *git_ops._confinement(),
        *git_ops.git_root(tree, writes),
        "--die-with-parent",
        "/usr/bin/python3", "-S", "-c", probe, *map(str, paths),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout.decode()


def test_what_a_pinned_git_may_write_is_exactly_what_its_writes_name(tmp_path: Path) -> None:
    """Binds a parent's bind shows alike are spared; the ones that narrow what the parent
    allows (the config read-only in a writable git dir) are not."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    common = tree.common
    config, ref, own_head = common / "config", common / "refs" / "probe", tree.gitdir / "HEAD"
    objects = common / "objects" / "probe"

    as_tree = _writable_in_root(tree, "tree", [config, ref, objects, own_head])
    as_objects = _writable_in_root(tree, "objects", [config, ref, objects, own_head])
    as_repository = _writable_in_root(tree, "repository", [config, ref, objects])

    assert "writable" not in as_tree
    assert as_objects.count("writable") == 2
    assert f"writable {objects}" in as_objects
    assert f"writable {own_head}" in as_objects
    assert f"refused {config}" in as_repository
    assert f"writable {ref}" in as_repository
    assert f"writable {objects}" in as_repository
