"""A worktree's ``.git`` file must still point where git put it.

A worktree's ``.git`` is a one-line file naming its administrative directory inside
the source repository (``<repo>/.git/worktrees/<name>``). The build agent may write
files in the worktree; if it rewrote ``.git`` to point at a directory of its own, the
next git kodo runs there would read that directory's config (fsmonitor, hooks, filter
drivers). So the pointer is checked both ways (it names the repository's own admin
directory, and that directory names this worktree back), and git is then told that
directory (``GIT_DIR``): it never reads the pointer itself, which another run's agent
could swap between kodo's check and git's own read of it.

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


class PointerRewritten(ValueError):
    """A worktree's ``.git`` is not git's own pointer (its message names the rule)."""


def verified_gitdir(worktree: Path, repo: Path) -> Path:
    """The admin directory git keeps for ``worktree`` in ``repo``, read from the worktree's
    ``.git`` and confirmed by git's own record of it (the admin directory names the
    worktree back, exactly). Raises PointerRewritten otherwise.

    Only the returned path may serve git afterwards (``GIT_DIR``): the pointer itself can
    be swapped between this check and any later read of it. Nothing the agent may write
    is resolved before the comparison: a worktree folder replaced by a symlink to another
    run's would otherwise resolve to that run's, and be handed its git dir.
    """
    if worktree.is_symlink():
        raise PointerRewritten(f"{RULE}: {worktree} is a symlink, not the folder git made")
    dotgit = worktree / ".git"
    if dotgit.is_symlink() or not dotgit.is_file():
        raise PointerRewritten(
            f"{RULE}: {dotgit} is not the file git wrote (a symlink or a directory)"
        )
    try:
        text = dotgit.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PointerRewritten(f"{RULE}: cannot read {dotgit}: {exc}") from exc
    first, _, rest = text.partition("\n")
    if not first.startswith("gitdir: ") or rest.strip():
        raise PointerRewritten(f"{RULE}: {dotgit} is not a single 'gitdir:' line")
    named = Path(first.removeprefix("gitdir: ").strip())
    expected_parent = (repo / ".git" / "worktrees").resolve()
    if not named.is_absolute() or named.parent != expected_parent or named.is_symlink():
        raise PointerRewritten(f"{RULE}: {dotgit} points outside {expected_parent}")
    back = named / "gitdir"
    try:
        recorded = back.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PointerRewritten(f"{RULE}: cannot read {back}: {exc}") from exc
    here = worktree.parent.resolve() / worktree.name / ".git"  # the workspaces are kodo's
    if recorded != str(here):
        raise PointerRewritten(f"{RULE}: {named} belongs to another worktree ({recorded})")
    return named


def worktree_gitdir_problem(worktree: Path, repo: Path) -> str | None:
    """None if ``worktree/.git`` is git's own pointer into ``repo``; else why not."""
    try:
        verified_gitdir(worktree, repo)
    except PointerRewritten as exc:
        return str(exc)
    return None
