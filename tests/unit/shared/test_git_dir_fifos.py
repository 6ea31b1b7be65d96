"""Rule git_dir: nothing in a repository's git dir is a fifo, a socket or a device,
the object store included (red-team helper-107).

git_dir_refusal walks the git dir but lets any entry of ``objects/`` and of the
folders directly below it through unexamined (``objects_only``): ``objects/info`` and
``objects/pack`` are among those folders. A fifo at ``objects/info/alternates`` or
``objects/pack/pack-<x>.idx`` (anyone can make one: ``mkfifo``) passes the check, and
every git kodo then runs on the repository (its own, and the unsandboxed ``gc --auto``
of the reconciler's upkeep) blocks in ``open()`` until its timeout: a git dir the
rule's own docstring promises to refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.git_dir import git_dir_refusal


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("objects/info", "objects/pack", "objects/ab", "refs/heads", "info"):
        (repo / ".git" / name).mkdir(parents=True)
    return repo


@pytest.mark.parametrize(
    "entry", ["objects/info/alternates", "objects/pack/pack-1.idx", "objects/ab/cdef"]
)
def test_a_fifo_in_the_object_store_is_refused(repo: Path, entry: str) -> None:
    os.mkfifo(repo / ".git" / entry)
    said = git_dir_refusal(repo) or ""
    assert said.startswith("git_dir: "), f"a fifo at .git/{entry} passed the check"
    assert entry.rsplit("/", 1)[-1] in said
