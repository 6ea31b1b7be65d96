"""A worktree's ``.git`` file must still point where git put it.

A worktree's ``.git`` is a one-line file naming its administrative directory inside
the source repository (``<repo>/.git/worktrees/<name>``). The build agent may write
files in the worktree; if it rewrote ``.git`` to point at a directory of its own, the
next git kodo runs there would read that directory's config (fsmonitor, hooks, filter
drivers). So the pointer is checked both ways (it names the repository's own admin
directory, and that directory names this worktree back), and git is then told that
directory (``GIT_DIR``): it never reads the pointer itself, which another run's agent
could swap between kodo's check and git's own read of it.

The folder is held the same way. The workspaces folder is the daemon's to write, so
the name ``<workspaces>/<run>`` can be made, at any moment, a symlink to any folder kodo
may write. kodo notes the folder's device and inode when it opens the worktree and then
reaches its files only through a descriptor of that folder (:func:`open_folder`,
:func:`open_below`, :func:`resolves_inside`); git gets the descriptor bound at a private
mount point (git_ops), never the name.

git also sees only regular files, directories and symlinks: a FIFO, a socket or a device
node is neither staged (so never judged) nor removed by ``git clean`` (so it would stay,
where a verification command opens it and blocks). :func:`special_files` finds them,
:func:`remove_special_files` drops them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("kodo.worktree")

RULE = "worktree_gitdir"
SPECIAL_RULE = "special_file"


def shown_path(path: str) -> str:
    """A name as the filesystem holds it, printable: bytes that are not UTF-8 as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class PointerRewritten(ValueError):
    """A worktree's ``.git`` or folder is not what git made (its message names the rule)."""


FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on a path's symlinks


def folder_identity(path: Path) -> tuple[int, int]:
    """(device, inode) of the folder at ``path`` itself (a symlink there is refused)."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise PointerRewritten(f"{RULE}: cannot read {path}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise PointerRewritten(f"{RULE}: {path} is a symlink or a file, not the folder git made")
    return st.st_dev, st.st_ino


def open_folder(path: Path, identity: tuple[int, int]) -> int:
    """A descriptor of the folder at ``path``, which must still be the one ``identity``
    names: the workspaces folder is the daemon's to write, so a run's folder can be moved
    aside and a symlink (to any folder kodo may write) left in its place. Everything kodo
    does in a worktree afterwards goes through the descriptor, never the name."""
    try:
        fd = os.open(path, FOLDER)
    except OSError as exc:
        raise PointerRewritten(f"{RULE}: {path} is no longer the run's folder: {exc}") from exc
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity:
        os.close(fd)
        raise PointerRewritten(f"{RULE}: {path} was replaced since the worktree was opened")
    return fd


def open_below(root: int, path: str, flags: int = FOLDER) -> int:
    """``path`` (relative) opened below the folder ``root`` one component at a time, no
    symlink followed on the way or at the end (OSError otherwise)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(f"{path!r} climbs out of its folder")
    current = os.dup(root)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            opened = os.open(part, (flags if last else FOLDER) | os.O_NOFOLLOW, dir_fd=current)
            os.close(current)
            current = opened
        return current
    except BaseException:
        os.close(current)
        raise


def resolves_inside(root: int, path: str) -> bool:
    """Whether ``path`` (relative to the folder ``root``), each symlink on it followed as
    the filesystem would, stays inside that folder (the folder itself counts as inside).

    Anchored at the descriptor, so a swap of the folder's name changes nothing. A link
    to an absolute path is outside; so is a chain of more than 40 links (fail closed).
    Past a component that does not exist the rest is read as names (``..`` still counts).
    """
    place: list[str] = []
    todo = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if not place:
                return False
            place.pop()
            continue
        try:
            folder = open_below(root, "/".join(place))
        except OSError:
            return _lexically_inside(place, [part, *todo])
        try:
            st = os.stat(part, dir_fd=folder, follow_symlinks=False)
            target = os.readlink(part, dir_fd=folder) if stat.S_ISLNK(st.st_mode) else None
        except OSError:
            return _lexically_inside(place, [part, *todo])
        finally:
            os.close(folder)
        if target is None:
            place.append(part)
            continue
        links += 1
        if links > _MAX_LINKS or target.startswith("/"):
            return False
        todo = [p for p in target.split("/") if p not in ("", ".")] + todo
    return True


def _lexically_inside(place: list[str], rest: list[str]) -> bool:
    depth = len(place)
    for part in rest:
        if part == "..":
            if depth == 0:
                return False
            depth -= 1
        elif part not in ("", "."):
            depth += 1
    return True


def special_files(root: int) -> list[str]:
    """Entries below the folder ``root`` that are not regular files, directories or
    symlinks (symlinks are not followed), and directories kodo cannot read; relative,
    sorted."""
    found: list[str] = []
    pending = [""]
    while pending:
        folder = pending.pop()
        try:
            fd = open_below(root, folder)
        except OSError:
            found.append(folder or ".")
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    rel = f"{folder}/{entry.name}" if folder else entry.name
                    if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(rel)
                    else:
                        found.append(rel)
        except OSError:
            found.append(folder or ".")
        finally:
            os.close(fd)
    return sorted(found)


def special_files_problem(root: int) -> tuple[str, list[str]] | None:
    """The ``special_file`` diagnostic and the paths, or None."""
    found = special_files(root)
    if not found:
        return None
    shown = ", ".join(shown_path(p) for p in found[:20]) + (" ..." if len(found) > 20 else "")
    return (
        f"{SPECIAL_RULE}: the worktree holds entries git can neither judge nor undo"
        f" (FIFO, socket, device node, unreadable folder): {shown}",
        [shown_path(p) for p in found[:200]],
    )


def remove_special_files(root: int) -> None:
    """Unlink every special entry :func:`special_files` finds (folders are git's to clean).
    An entry kodo cannot even look at (a path past PATH_MAX) is left to ``git clean``."""
    for path in special_files(root):
        parent, _, name = path.rpartition("/")
        try:
            folder = open_below(root, parent)
        except OSError as exc:
            log.warning("worktree.special_file_kept", path=shown_path(path), error=str(exc)[:200])
            continue
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=folder)
        except OSError as exc:
            log.warning("worktree.special_file_kept", path=shown_path(path), error=str(exc)[:200])
        finally:
            os.close(folder)


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
