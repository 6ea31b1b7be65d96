"""The trusted policy ref's default: the branch the repository's HEAD names, read as the
file when it plainly names one, else asked of git; both always agree with
``git symbolic-ref -q HEAD`` (real git, real repositories)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shared.service import repo_pin
from shared.service.repo_pin import _default_branch, _Git, _head_file_branch

pytestmark = pytest.mark.integration


def _repo(tmp_path: Path, branch: str = "main") -> Path:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", branch, str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
        check=True,
    )
    return repo


def _git_says(repo: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "symbolic-ref", "-q", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "HEAD"


class _Counted(_Git):
    """The submit's git, counting the processes it starts."""

    def __init__(self, repo: Path) -> None:
        super().__init__(repo)
        self.asked: list[tuple[str, ...]] = []

    def __call__(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        self.asked.append(args)
        return super().__call__(*args, stdin=stdin)


@pytest.mark.parametrize("branch", ["main", "feature/x-1", "release/2026_12"])
def test_a_plain_branch_is_read_from_the_head_file_without_git(tmp_path: Path, branch: str) -> None:
    repo = _repo(tmp_path, branch)
    git = _Counted(repo)
    assert _default_branch(git) == f"refs/heads/{branch}" == _git_says(repo)
    assert git.asked == [], "no git process for a HEAD that plainly names a branch"


def _set_head(repo: Path, content: bytes) -> None:
    (repo / ".git" / "HEAD").write_bytes(content)


@pytest.mark.parametrize(
    "content",
    [
        b"ref: refs/heads/v1.2\n",  # a dot: valid for git, asked of it
        b"ref: refs/heads/main\r\n",
        b"ref: refs/heads/main",  # no newline
        b"ref: refs/heads/main\nref: refs/heads/other\n",
        b"ref: refs/tags/main\n",  # not a branch
        b"ref: refs/heads/.invalid\n",  # what a reftable repository's HEAD file says
        b"ref: refs/heads/a..b\n",
    ],
)
def test_anything_unusual_in_the_head_file_is_asked_of_git(tmp_path: Path, content: bytes) -> None:
    repo = _repo(tmp_path)
    _set_head(repo, content)
    git = _Counted(repo)
    assert _head_file_branch(repo) is None
    assert _default_branch(git) == _git_says(repo)
    assert git.asked == [("symbolic-ref", "-q", "HEAD")]


def test_a_detached_head_is_head_as_git_says(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--detach"], check=True)
    assert _default_branch(_Git(repo)) == "HEAD" == _git_says(repo)


def test_a_head_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    """A link at HEAD (git still reads a symlinked HEAD): kodo's file read refuses to
    follow it, and git answers."""
    repo = _repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"ref: refs/heads/other\n")
    head = repo / ".git" / "HEAD"
    head.unlink()
    head.symlink_to(elsewhere)
    git = _Counted(repo)
    assert _head_file_branch(repo) is None
    assert _default_branch(git) == _git_says(repo)
    assert git.asked == [("symbolic-ref", "-q", "HEAD")]


def test_a_fifo_at_head_never_blocks_the_submit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    head = repo / ".git" / "HEAD"
    head.unlink()
    os.mkfifo(head)
    assert _head_file_branch(repo) is None  # opened without blocking, refused as no file


def test_a_worktree_pointer_or_bare_repository_is_asked_of_git(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    linked = tmp_path / "linked"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(linked)], check=True)
    for where in (bare, linked):
        assert _head_file_branch(where) is None
        assert _default_branch(_Git(where)) == _git_says(where)


def test_an_oversized_head_file_is_asked_of_git(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _set_head(repo, b"ref: refs/heads/" + b"a" * repo_pin.HEAD_MAX_BYTES + b"\n")
    assert _head_file_branch(repo) is None
