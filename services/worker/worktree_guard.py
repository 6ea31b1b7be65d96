"""A worktree's ``.git`` file must still point where git put it.

A worktree's ``.git`` is a one-line file naming its administrative directory inside
the source repository (``<repo>/.git/worktrees/<name>``). The build agent may write
files in the worktree; if it rewrote ``.git`` to point at a directory of its own, the
next git kodo runs there would read that directory's config (fsmonitor, hooks, filter
drivers). So before git runs in a worktree, the pointer is checked both ways: it names
the repository's own admin directory, and that directory names this worktree back.

git also sees only regular files, directories and symlinks: a FIFO, a socket or a device
node is neither staged (so never judged) nor removed by ``git clean`` (so it would stay,
where a verification command opens it and blocks). :func:`special_files` finds them,
:func:`remove_special_files` drops them.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger("kodo.worktree")

RULE = "worktree_gitdir"
SPECIAL_RULE = "special_file"


def shown_path(path: str) -> str:
    """A name as the filesystem holds it, printable: bytes that are not UTF-8 as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def special_files(worktree: Path) -> list[str]:
    """Entries under ``worktree`` that are not regular files, directories or symlinks
    (symlinks are not followed), and directories kodo cannot read; relative, sorted."""
    found: list[str] = []
    pending = [str(worktree)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        found.append(os.path.relpath(entry.path, worktree))
        except OSError:
            found.append(os.path.relpath(folder, worktree))
    return sorted(found)


def special_files_problem(worktree: Path) -> tuple[str, list[str]] | None:
    """The ``special_file`` diagnostic and the paths, or None."""
    found = special_files(worktree)
    if not found:
        return None
    shown = ", ".join(shown_path(p) for p in found[:20]) + (" ..." if len(found) > 20 else "")
    return (
        f"{SPECIAL_RULE}: the worktree holds entries git can neither judge nor undo"
        f" (FIFO, socket, device node, unreadable folder): {shown}",
        [shown_path(p) for p in found[:200]],
    )


def remove_special_files(worktree: Path) -> None:
    """Unlink every special entry :func:`special_files` finds (folders are git's to clean).
    An entry kodo cannot even look at (a path past PATH_MAX) is left to ``git clean``."""
    for path in special_files(worktree):
        target = worktree / path
        try:
            if not target.is_dir():
                target.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("worktree.special_file_kept", path=shown_path(path), error=str(exc)[:200])


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
