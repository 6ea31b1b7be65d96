"""A worktree's ``.git`` file must still point where git put it.

A worktree's ``.git`` is a one-line file naming its administrative directory inside
the source repository (``<repo>/.git/worktrees/<name>``). The build agent may write
files in the worktree; if it rewrote ``.git`` to point at a directory of its own, the
next git kodo runs there would read that directory's config (fsmonitor, hooks, filter
drivers). So before git runs in a worktree, the pointer is checked both ways: it names
the repository's own admin directory, and that directory names this worktree back.
"""

from __future__ import annotations

from pathlib import Path

RULE = "worktree_gitdir"


def worktree_gitdir_problem(worktree: Path, repo: Path) -> str | None:
    """None if ``worktree/.git`` is git's own pointer into ``repo``; else why not."""
    dotgit = worktree / ".git"
    if dotgit.is_symlink() or not dotgit.is_file():
        return f"{RULE}: {dotgit} is not the file git wrote (a symlink or a directory)"
    try:
        text = dotgit.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{RULE}: cannot read {dotgit}: {exc}"
    first, _, rest = text.partition("\n")
    if not first.startswith("gitdir: ") or rest.strip():
        return f"{RULE}: {dotgit} is not a single 'gitdir:' line"
    admin = Path(first.removeprefix("gitdir: ").strip())
    expected_parent = (repo / ".git" / "worktrees").resolve()
    if not admin.is_absolute() or admin.resolve().parent != expected_parent:
        return f"{RULE}: {dotgit} points outside {expected_parent}"
    back = admin / "gitdir"
    try:
        pointed = Path(back.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError) as exc:
        return f"{RULE}: cannot read {back}: {exc}"
    if pointed.resolve() != dotgit.resolve():
        return f"{RULE}: {admin} belongs to another worktree ({pointed})"
    return None
