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
:func:`open_below`); git gets the descriptor bound at a private mount point (git_ops),
never the name. Where the tree's symlinks lead is judged from git's objects, not the
disk (shared.domain.tree_links).

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

from shared.plain_file import read_plain_text
from shared.real_path import resolved

log = structlog.get_logger("kodo.worktree")

RULE = "worktree_gitdir"
SPECIAL_RULE = "special_file"


def shown_path(path: str) -> str:
    """A name as the filesystem holds it, printable: bytes that are not UTF-8 as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class PointerRewritten(ValueError):
    """A worktree's ``.git`` or folder is not what git made (its message names the rule)."""


FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def regular_below(root: int, path: str) -> int | None:
    """``path`` below the folder ``root`` opened for reading if it is a regular file, no
    symlink followed (None if it is anything else: a FIFO opened to be read would wait
    for a writer forever, a device could act on being opened). It is opened as a path
    first (no side effect) and read through that descriptor, so what is read is what
    was looked at. OSError if it cannot be reached."""
    found = open_below(root, path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(found).st_mode):
            return None
        return os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(found)


def link_below(root: int, path: str) -> bytes | None:
    """The target of the symlink ``path`` below the folder ``root``, read from the link
    itself (none followed on the way); None if it is anything else. OSError if it cannot
    be reached."""
    found = open_below(root, path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISLNK(os.fstat(found).st_mode):
            return None
        return os.readlink(b"", dir_fd=found)  # the link the descriptor holds
    finally:
        os.close(found)


def names_below(root: int, paths: list[str], limit: int) -> tuple[list[str], int]:
    """Up to ``limit`` of ``paths`` (as git lists them, relative to the folder ``root``)
    that lead to an entry below it with no link followed, and how many of those looked
    at did not. git lists a folder by name: one swapped for a link while git was in it
    gets names from wherever the link leads listed as the worktree's (a red-team pass
    had another run's ids listed from the repository's git dir). Names as the filesystem
    holds them (``-z`` output): a quoted one would be taken for no name at all."""
    shown: list[str] = []
    hidden = 0
    for path in paths:
        if len(shown) == limit:
            break
        try:
            os.close(open_below(root, path.rstrip("/"), os.O_PATH | os.O_CLOEXEC))
        except OSError:
            hidden += 1
            continue
        shown.append(path)
    return shown, hidden


MAX_DEPTH = 256
"""Folders nested deeper than this are not walked but refused (``special_file``): a daemon
makes 30,000 nested folders in a second, and nothing in a repository needs them."""


def special_files(root: int) -> list[str]:
    """Entries below the folder ``root`` that are not regular files, directories or
    symlinks (symlinks are not followed), directories kodo cannot read, and folders
    nested deeper than MAX_DEPTH; relative, sorted. Each folder is opened from its
    parent's descriptor (the walk costs one open per folder, whatever the depth)."""
    found: list[str] = []
    _walk(os.dup(root), "", 0, found)
    return sorted(found)


def _walk(fd: int, folder: str, depth: int, found: list[str], *, remove: bool = False) -> None:
    """Walk the folder ``fd`` (closed here) at ``folder``, ``depth`` below the root;
    with ``remove``, unlink each special entry that is not a folder where it is found."""
    try:
        try:
            with os.scandir(fd) as entries:
                listed = [(entry.name, _kind(entry)) for entry in entries]
        except OSError:
            found.append(folder or ".")
            return
        for name, kind in listed:
            rel = f"{folder}/{name}" if folder else name
            if kind == "special":
                found.append(rel)
                if remove:
                    _unlink(fd, name, rel)
            elif kind == "folder":
                if depth >= MAX_DEPTH:
                    found.append(rel)
                    continue
                try:
                    child = os.open(name, FOLDER, dir_fd=fd)
                except OSError:
                    found.append(rel)
                    continue
                _walk(child, rel, depth + 1, found, remove=remove)
    finally:
        os.close(fd)


def _unlink(fd: int, name: str, rel: str) -> None:
    try:
        if not stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=fd)
    except OSError as exc:
        log.warning("worktree.special_file_kept", path=shown_path(rel), error=str(exc)[:200])


def _kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink() or entry.is_file(follow_symlinks=False):
            return "plain"
        return "folder" if entry.is_dir(follow_symlinks=False) else "special"
    except OSError:
        return "special"


def special_files_problem(root: int) -> tuple[str, list[str]] | None:
    """The ``special_file`` diagnostic and the paths, or None."""
    found = special_files(root)
    if not found:
        return None
    shown = ", ".join(shown_path(p) for p in found[:20]) + (" ..." if len(found) > 20 else "")
    return (
        f"{SPECIAL_RULE}: the worktree holds entries git can neither judge nor undo"
        f" (FIFO, socket, device node, unreadable folder, folders nested deeper than"
        f" {MAX_DEPTH}): {shown}",
        [shown_path(p) for p in found[:200]],
    )


def remove_special_files(root: int) -> None:
    """Unlink every special entry :func:`special_files` finds (folders are git's to clean),
    where the walk finds it. An entry kodo cannot even look at is left to ``git clean``."""
    _walk(os.dup(root), "", 0, [], remove=True)


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
    text = _pointer_text(dotgit)
    first, _, rest = text.partition("\n")
    if not first.startswith("gitdir: ") or rest.strip():
        raise PointerRewritten(f"{RULE}: {dotgit} is not a single 'gitdir:' line")
    named = Path(first.removeprefix("gitdir: ").strip())
    expected_parent = resolved(repo / ".git" / "worktrees")
    if not named.is_absolute() or named.parent != expected_parent or named.is_symlink():
        raise PointerRewritten(f"{RULE}: {dotgit} points outside {expected_parent}")
    back = named / "gitdir"
    try:
        recorded = read_plain_text(back).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PointerRewritten(f"{RULE}: cannot read {back}: {exc}") from exc
    here = resolved(worktree.parent) / worktree.name / ".git"  # the workspaces are kodo's
    if recorded != str(here):
        raise PointerRewritten(f"{RULE}: {named} belongs to another worktree ({recorded})")
    try:
        common = read_plain_text(named / "commondir").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PointerRewritten(f"{RULE}: cannot read {named / 'commondir'}: {exc}") from exc
    if common != "../..":  # what git and kodo write: the repository's own git dir
        raise PointerRewritten(f"{RULE}: {named} names another repository ({common[:200]})")
    return named


POINTER_MAX = 4096
"""Bytes a ``.git`` pointer may hold: one ``gitdir:`` line naming a path."""


def _pointer_text(dotgit: Path) -> str:
    """The pointer's text, read only if ``dotgit`` is a small regular file: opened without
    following a link and without waiting (a FIFO swapped in for it would block the read,
    and the worker's thread, forever), and read no further than POINTER_MAX (a sparse
    file of a terabyte would be read whole)."""
    try:
        fd = os.open(dotgit, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # ELOOP: a symlink; ENOENT; EACCES
        raise PointerRewritten(
            f"{RULE}: {dotgit} is not the file git wrote ({exc.strerror})"
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PointerRewritten(
                f"{RULE}: {dotgit} is not the file git wrote (a directory, FIFO or device)"
            )
        data = os.read(fd, POINTER_MAX + 1)
    except OSError as exc:
        raise PointerRewritten(f"{RULE}: cannot read {dotgit}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > POINTER_MAX:
        raise PointerRewritten(f"{RULE}: {dotgit} is larger than a pointer ({POINTER_MAX} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PointerRewritten(f"{RULE}: cannot read {dotgit}: {exc}") from exc


def worktree_gitdir_problem(worktree: Path, repo: Path) -> str | None:
    """None if ``worktree/.git`` is git's own pointer into ``repo``; else why not."""
    try:
        verified_gitdir(worktree, repo)
    except PointerRewritten as exc:
        return str(exc)
    return None
