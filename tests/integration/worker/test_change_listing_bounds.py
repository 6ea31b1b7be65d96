"""The judge counts an agent's change against ``max_files`` as git lists it, holding
none of a listing past the bound: a daemon that writes the worktree itself can leave
any number of files, each at a path of 4 kB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import TooManyChanges, ensure_worktree, stage_edits, tree_names

pytestmark = pytest.mark.integration

FILES = 20_000
ROOT = Path(__file__).resolve().parents[3]

# What ApplyPatchST does with the agent's files, in a fresh process (its peak RSS is
# that of the listing alone).
STAGE = r"""
import json, resource, sys
from pathlib import Path
from services.worker.git_ops import TooManyChanges, open_worktree, stage_edits
tree = open_worktree(Path(sys.argv[1]), Path(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
said = None
try:
    stage_edits(tree, most=50)
except TooManyChanges as exc:
    said = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mb": (after - before) / 1024, "said": said}))
"""


def _leave_files(worktree: Path, count: int) -> None:
    """``count`` empty files at paths of about 4 kB (one chain of 250-byte folders)."""
    folder = worktree / "d"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(15):
            os.mkdir("a" * 250, dir_fd=fd)
            child = os.open("a" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        for i in range(count):
            os.close(os.open(f"{i:08d}" + "b" * 200, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_a_change_past_max_files_is_refused_holding_no_listing(tmp_path: Path) -> None:
    """Held whole, the listing of these 20,000 files grew the worker by 199 MB before
    their refusal (a red-team pass), ten times that for ten times the files."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    _leave_files(tree.path, FILES)

    done = subprocess.run(
        [sys.executable, "-c", STAGE, str(tree.path), str(repo)],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert seen["said"] == f"the change touches {FILES} files (more than 50 are not read)"
    assert seen["grew_mb"] < 40, f"refusing them grew the worker by {seen['grew_mb']:.0f} MB"


@pytest.mark.parametrize("count", [3, 4])
def test_a_change_within_max_files_is_read_whole(tmp_path: Path, count: int) -> None:
    """At the bound exactly, every change is listed and judged; one more is refused."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    for i in range(count):
        (tree.path / f":odd {i}.txt").write_text(f"{i}\n")  # a name that starts like a head
    if count > 3:
        with pytest.raises(TooManyChanges, match=f"touches {count} files"):
            stage_edits(tree, most=3)
        return
    changes = stage_edits(tree, most=3)
    assert sorted(c.path for c in changes) == [f":odd {i}.txt" for i in range(count)]
    assert all(c.added == 1 for c in changes)


def test_a_tree_s_names_are_read_whole_across_chunks(tmp_path: Path) -> None:
    """tree_names streams git ls-tree: names split across its 64 kB reads come whole."""
    repo = create_sample_repo(tmp_path / "calc")
    names = [f"d/{'n' * 200}-{i:05d}.txt" for i in range(1000)]  # about 210 kB of names
    for name in names:
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text("x\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "names"], check=True)
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    read = list(tree_names(tree, "HEAD"))

    assert sorted(read) == sorted([*names, *(p.name for p in repo.iterdir() if p.is_file())])
