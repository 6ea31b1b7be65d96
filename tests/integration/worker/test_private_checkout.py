"""The command's private checkout is the judged commit's bytes, or nothing runs.

A checkout runs the commit's ``.gitattributes``: with ``working-tree-encoding=UTF-7``
in the base commit, an agent's raw write of ``return a - b #(b)`` (which UTF-7 reads
back as itself, so every ApplyPatchST check passed) was checked out as
``return a - b +ACM(b)`` beside a ``def ACM(x): return x - -x``, and the verification
passed a commit whose add() is wrong (a red-team pass).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services.worker.git_ops import (
    BLOB_SIZES,
    UnfaithfulCheckout,
    Worktree,
    commit_index,
    ensure_worktree,
    exec_root,
    private_checkout,
    private_index,
    stage_edits,
    unfaithful_paths,
)
from tests.integration.worker.test_git_hardening import count_git

pytestmark = pytest.mark.integration

EVIL = "def ACM(x):\n    return x - -x\n\n\ndef add(a, b):\n    return a - b #(b)\n"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def _repo(tmp_path: Path, attributes: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / ".gitattributes").write_text(attributes)
    (repo / "calc.py").write_text("def add(a, b):\n    return 0\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "base")
    return repo


def _judged_then_refused_at_checkout(
    repo: Path, workspace: Path, tree: Worktree
) -> UnfaithfulCheckout:
    """Stage what the agent wrote (faithful: it is what was staged), commit it, and
    return the private checkout's refusal of that commit."""
    changes = stage_edits(tree)
    assert unfaithful_paths(tree, changes) == [], "the judged change itself is faithful"
    commit = commit_index(tree, "kodo: the change\n")
    with (
        pytest.raises(UnfaithfulCheckout, match="worktree_filter") as refused,
        private_checkout(repo, workspace, "run-1", commit),
    ):
        pytest.fail("the command would have run what nobody judged")
    return refused.value


def test_a_checkout_that_re_encodes_the_judged_commit_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "calc.py working-tree-encoding=UTF-7\n")
    workspace = tmp_path / "ws"
    tree = ensure_worktree(repo, workspace, "run-1", "HEAD")
    worktree = tree.path
    (worktree / "calc.py").write_text(EVIL)  # the agent's write tool: raw bytes

    refused = _judged_then_refused_at_checkout(repo, workspace, tree)
    assert refused.paths == ["calc.py"]
    assert not (exec_root(workspace) / "run-1").exists(), "and the checkout is gone"


def test_line_endings_a_checkout_converts_are_allowed(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "*.py text eol=crlf\n")
    workspace = tmp_path / "ws"
    commit = _git(repo, "rev-parse", "HEAD").strip()
    with private_checkout(repo, workspace, "run-1", commit) as tree:
        assert (tree / "calc.py").read_bytes() == b"def add(a, b):\r\n    return 0\r\n"


def _worktrees(repo: Path) -> list[str]:
    listed = _git(repo, "worktree", "list", "--porcelain")
    return [
        line.removeprefix("worktree ")
        for line in listed.splitlines()
        if line.startswith("worktree ")
    ]


def test_a_checkout_is_the_commits_files_and_nothing_the_repository_records(
    tmp_path: Path,
) -> None:
    """No worktree is registered (``git worktree add`` and its prune read every worktree
    of the repository, under its lock), and the repository's own HEAD, index and staged
    work are untouched."""
    repo = _repo(tmp_path, "")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "deep" / "er" / "f.txt").write_text("deep\n")
    (repo / "link.py").symlink_to("calc.py")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "more")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "calc.py").write_text("staged by the user\n")
    _git(repo, "add", "calc.py")
    head_before = (repo / ".git" / "HEAD").read_bytes()
    index_before = (repo / ".git" / "index").read_bytes()
    workspace = tmp_path / "ws"

    with private_checkout(repo, workspace, "run-1", commit) as tree:
        assert _worktrees(repo) == [str(repo)], "nothing registered"
        assert not (tree / ".git").exists()
        assert (tree / "calc.py").read_text() == "def add(a, b):\n    return 0\n"
        assert (tree / "run.sh").stat().st_mode & 0o111, "the executable bit is the commit's"
        assert (tree / "link.py").is_symlink()
        assert str((tree / "link.py").readlink()) == "calc.py"
        assert (tree / "deep" / "er" / "f.txt").read_text() == "deep\n"
        assert private_index(workspace, "run-1").is_file(), "its index lies beside it"

    assert not (exec_root(workspace) / "run-1").exists()
    assert not private_index(workspace, "run-1").exists(), "and its index is gone with it"
    assert (repo / ".git" / "HEAD").read_bytes() == head_before
    assert (repo / ".git" / "index").read_bytes() == index_before, "the user's staging kept"
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["calc.py"]


def test_a_registered_checkout_an_earlier_kodo_left_is_removed_and_forgotten(
    tmp_path: Path,
) -> None:
    """A worker of an earlier version killed during its command left a registered worktree
    where the checkout goes: it is removed, and git's record of it pruned."""
    repo = _repo(tmp_path, "")
    workspace = tmp_path / "ws"
    commit = _git(repo, "rev-parse", "HEAD").strip()
    left = exec_root(workspace) / "run-1"
    _git(repo, "worktree", "add", "-q", "--detach", str(left), commit)
    (left / "stray.txt").write_text("the crashed command's\n")

    with private_checkout(repo, workspace, "run-1", commit) as tree:
        assert not (tree / "stray.txt").exists()
        assert _worktrees(repo) == [str(repo)], "the stale registration is pruned"


JUDGED_TEST = "def ACM(x):\n    return x\n\n\ndef test_add():\n    assert not 5 - 5 #(1) or 1\n"


def test_a_name_git_would_unquote_is_hashed_as_itself_not_as_its_decoy(tmp_path: Path) -> None:
    """``git hash-object --stdin-paths`` reads ``"t"/test.py`` as the file ``t`` (it
    C-unquotes a name that starts with a quote) and ``x<CR>`` as ``x``: a decoy holding
    the judged bytes made a re-encoded test look faithful, and the verification passed a
    test that fails on the judged commit (a red-team pass). Each file is hashed as
    itself."""
    repo = _repo(
        tmp_path, '?t?/* working-tree-encoding=UTF-7\n"u.txt\\r" working-tree-encoding=UTF-7\n'
    )
    workspace = tmp_path / "ws"
    tree = ensure_worktree(repo, workspace, "run-1", "HEAD")
    (tree.path / '"t"').mkdir()
    (tree.path / '"t"' / "test_add.py").write_text(JUDGED_TEST)
    (tree.path / "t").write_text(JUDGED_TEST)  # the decoy git hashed instead
    (tree.path / "u.txt\r").write_text("x = 1 #(2)\n")
    (tree.path / "u.txt").write_text("x = 1 #(2)\n")

    refused = _judged_then_refused_at_checkout(repo, workspace, tree)
    assert '"t"/test_add.py' in refused.paths
    assert "u.txt\r" in refused.paths


def test_a_staged_conversion_behind_a_quoted_name_is_caught_in_the_worktree(
    tmp_path: Path,
) -> None:
    """The same decoy against ApplyPatchST's check: ``ident`` stages ``$Id$`` where the
    file on disk says ``$Id: <code> $``; the decoy ``q`` holds the staged bytes."""
    repo = _repo(tmp_path, "*.py ident\n")
    workspace = tmp_path / "ws"
    tree = ensure_worktree(repo, workspace, "run-1", "HEAD")
    (tree.path / '"q"').mkdir()
    (tree.path / '"q"' / "x.py").write_text('X = "$Id: import os; os.system(1) $"\n')
    (tree.path / "q").write_text('X = "$Id$"\n')
    changes = stage_edits(tree)
    assert unfaithful_paths(tree, changes) == ['"q"/x.py']


def test_an_index_lock_a_killed_checkout_left_does_not_stop_the_next(tmp_path: Path) -> None:
    """git killed while writing the checkout's index (its timeout, a dying worker) leaves
    ``<run>.index.lock``; the next delivery's checkout of the run goes ahead."""
    repo = _repo(tmp_path, "")
    workspace = tmp_path / "ws"
    commit = _git(repo, "rev-parse", "HEAD").strip()
    exec_root(workspace).mkdir(parents=True)
    lock = exec_root(workspace) / "run-1.index.lock"
    lock.write_bytes(b"DIRC")

    with private_checkout(repo, workspace, "run-1", commit) as tree:
        assert (tree / "calc.py").exists()
    assert not lock.exists()


def test_a_file_swapped_for_one_of_another_size_is_refused_unread(tmp_path: Path) -> None:
    """After ``git add`` the daemon swaps in a 1 TiB sparse file: a read of it to the end
    would take hours; a file not of the staged blob's size is unfaithful as it stands."""
    repo = _repo(tmp_path, "")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    changes = stage_edits(tree)
    with (tree.path / "calc.py").open("r+b") as swapped:
        swapped.truncate(1 << 40)

    assert unfaithful_paths(tree, changes) == ["calc.py"]


def test_a_name_that_is_not_utf8_is_refused_not_hashed_by_its_printable_twin(
    tmp_path: Path,
) -> None:
    """git prints ``\\xff.py`` as ``\\ufffd.py``; a decoy of that name held the staged
    bytes while the real file said ``$Id: <code> $`` (a red-team pass)."""
    repo = _repo(tmp_path, "*.py ident\n")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / os.fsdecode(b"\xff.py")).write_text('X = "$Id: import os $"\n')
    (tree.path / "\ufffd.py").write_text('X = "$Id$"\n')
    changes = stage_edits(tree)

    assert "\ufffd.py" in unfaithful_paths(tree, changes)


@pytest.mark.parametrize("now", ["another target", "a file of the target's bytes", "its own"])
def test_a_staged_link_is_faithful_only_if_the_disk_holds_that_very_link(
    tmp_path: Path, now: str
) -> None:
    """git stages a symlink's target, read by name: one read through a folder swapped
    for a link meanwhile is another link's. The link on disk is read itself (never
    followed) and must be what was staged."""
    repo = _repo(tmp_path, "")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "docs").mkdir()
    (tree.path / "docs" / "link").symlink_to("../calc.py")
    changes = stage_edits(tree)
    (tree.path / "docs" / "link").unlink()
    if now == "another target":
        (tree.path / "docs" / "link").symlink_to("/etc/passwd")
    elif now == "a file of the target's bytes":
        (tree.path / "docs" / "link").write_text("../calc.py")
    else:
        (tree.path / "docs" / "link").symlink_to("../calc.py")

    expected = [] if now == "its own" else ["docs/link"]
    assert unfaithful_paths(tree, changes) == expected


def test_the_sizes_come_with_the_blobs_read_for_line_counts_and_are_asked_only_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's blob is read once (a text file's lone carriage returns counted, a binary
    one's line feeds) and its size kept from that read, so the check of the bytes on
    disk starts no second git for it; a binary file not read to its end (past
    ``most_bytes``) has its size asked of git."""
    repo = _repo(tmp_path, "")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (tree.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    changes = stage_edits(tree)
    text = next(c for c in changes if c.path == "calc.py")
    assert text.new_size == len(b"def add(a, b):\n    return a + b\n")

    asked = count_git(monkeypatch)
    assert unfaithful_paths(tree, changes) == []
    assert not [a for a in asked if "cat-file" in a], "no git asked for a size it was told"

    (tree.path / "blob.bin").write_bytes(b"\0\1\2" * 100)
    changes = stage_edits(tree)
    binary = next(c for c in changes if c.path == "blob.bin")
    assert (binary.added, binary.new_size) == (1, 300)
    asked.clear()
    assert unfaithful_paths(tree, changes) == []
    assert not [a for a in asked if "cat-file" in a], "no git asked for a size it was told"

    (tree.path / "blob.bin").write_bytes(b"\0\1\2" * 100_000)
    changes = stage_edits(tree, most_bytes=1000)
    binary = next(c for c in changes if c.path == "blob.bin")
    assert binary.new_size is None  # not read to its end
    asked.clear()
    assert unfaithful_paths(tree, changes) == []
    assert [a[-2:] for a in asked if "cat-file" in a] == [list(BLOB_SIZES)]
    with (tree.path / "blob.bin").open("r+b") as grown:  # its size still judges the disk
        grown.truncate(1 << 20)
    assert unfaithful_paths(tree, changes) == ["blob.bin"]
