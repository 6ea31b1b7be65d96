"""kodo writes only into a repository's own git dir: every entry it writes or deletes
through is a real folder inside it (shared.git_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.git_dir import git_dir_refusal


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("objects", "refs/heads", "info", "worktrees/run-1"):
        (repo / ".git" / name).mkdir(parents=True)
    return repo


def test_a_repository_s_own_git_dir_is_written_into(repo: Path) -> None:
    assert git_dir_refusal(repo) is None


def test_a_git_dir_that_is_a_link_is_refused(repo: Path, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / ".git").symlink_to(repo / ".git")
    assert (git_dir_refusal(decoy) or "").startswith("git_dir: ")
    assert "is a link" in (git_dir_refusal(decoy) or "")


def test_a_gitdir_file_names_another_repository_and_is_refused(tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    assert "submit the repository itself" in (git_dir_refusal(linked) or "")


@pytest.mark.parametrize("entry", ["objects", "refs", "refs/heads", "worktrees", "info"])
def test_an_entry_kodo_writes_through_that_is_a_link_is_refused(
    repo: Path, tmp_path: Path, entry: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = repo / ".git" / entry
    target.rename(tmp_path / "moved")
    target.symlink_to(elsewhere)
    assert f".git/{entry} is a link" in (git_dir_refusal(repo) or "")


def test_a_commondir_redirecting_the_repository_is_refused(repo: Path) -> None:
    (repo / ".git" / "commondir").write_text("/elsewhere/.git\n")
    assert "commondir" in (git_dir_refusal(repo) or "")


def test_a_worktree_record_that_is_a_link_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / ".git" / "worktrees" / "run-2").symlink_to(tmp_path)
    assert ".git/worktrees/run-2 is a link" in (git_dir_refusal(repo) or "")


def test_no_git_dir_is_refused(tmp_path: Path) -> None:
    assert "has no .git" in (git_dir_refusal(tmp_path) or "")


@pytest.mark.parametrize(
    ("content", "refused"),
    [
        (b"", False),
        (b"# nothing set\n\n   \n", False),
        (b"*.py -diff\n", True),
        (b"# a comment\n*.png binary\n", True),
    ],
)
def test_info_attributes_setting_anything_is_refused(
    repo: Path, content: bytes, refused: bool
) -> None:
    """git reads it even where kodo shows a change with no work tree (patch.diff)."""
    (repo / ".git" / "info" / "attributes").write_bytes(content)
    said = git_dir_refusal(repo)
    assert (said is not None) is refused
    if refused:
        assert "info/attributes sets attributes for every tree" in (said or "")


@pytest.mark.parametrize(
    "where", ["refs/heads/kodo", "logs/refs/heads/kodo", "objects/ab", "packed-refs", "config"]
)
def test_a_link_at_any_depth_of_the_git_dir_is_refused(
    repo: Path, tmp_path: Path, where: str
) -> None:
    """git follows links at any depth, and its lock files replace the file a link names
    (red-team helper-105: a branch, blobs and packed-refs written out of the roots)."""
    link = repo / ".git" / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path)
    assert f".git/{where} is a link" in (git_dir_refusal(repo) or "")


def test_a_fifo_in_the_git_dir_is_refused(repo: Path) -> None:
    import os

    os.mkfifo(repo / ".git" / "index")
    assert ".git/index is neither a file nor a folder" in (git_dir_refusal(repo) or "")
