"""Whether kodo may write into a repository's git dir: it is the repository's own.

kodo writes a run's branch, its worktree record and objects into ``<repo>/.git``, and
deletes through it (its own records, and the ``git worktree prune`` of a cleanup or of a
``git gc --auto``). A repository's owner controls every entry of that folder: a ``.git``
that is a link (or a ``gitdir:`` file) to another repository made kodo check that one
out for an agent and write refs into it, outside KODO_REPO_ROOTS; a
``.git/worktrees`` that is a link made kodo write its records through it and git's prune
delete every entry of the folder it led to, as the worker (red-team helper-104). So each
entry kodo's git writes or deletes through must be a real folder inside the git dir, and
a ``commondir`` (which makes git take another folder for the repository) is refused.

Checked at submit and again, under the repository's lock, before each registration,
removal and prune: the owner may change the folder between runs. (Between the check and
git's own walk the owner could still swap a link in; kodo cannot lock the owner out of
their own repository.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from shared.domain.git_quoting import c_unquoted

GIT_DIR_RULE = "git_dir"

MAX_ENTRIES = 2_000_000
"""Entries of a git dir a check reads at most (a git dir holding more is refused)."""


def git_dir_refusal(repo: Path) -> str | None:
    """Why kodo must not write into ``repo``'s git dir (naming :data:`GIT_DIR_RULE`), or
    None: ``.git`` is a real folder with no ``commondir``, nothing in it is a link, a
    fifo, a socket or a device, or a folder of another file system (a mount), and its
    ``info/attributes`` sets nothing (:func:`info_attributes_refusal`).

    git follows links at any depth, and its lock files follow a link to the file they
    replace: ``refs/heads/kodo`` or ``logs/refs/heads/kodo`` as a link got the run's
    branch written out of the roots, ``objects/<xx>`` links got the agent's blobs
    written there and a ``gc`` delete another repository's objects, a ``packed-refs``
    link got it rewritten (red-team helper-105). Each entry's type comes with its folder's
    listing (no stat per file; one per folder, for its file system), so a large object
    store costs about a listing of it."""
    git_dir = repo / ".git"
    kind = _kind(git_dir)
    if kind is None:
        return f"{GIT_DIR_RULE}: {repo} has no .git"
    if kind == "link":
        return f"{GIT_DIR_RULE}: {git_dir} is a link: kodo writes only into a repository's own"
    if kind != "dir":
        return (
            f"{GIT_DIR_RULE}: {git_dir} is not a folder (a linked worktree's or a submodule's"
            " .git file names another repository's git dir): submit the repository itself"
        )
    if _kind(git_dir / "commondir") is not None:
        return f"{GIT_DIR_RULE}: {git_dir}/commondir makes git take another folder for it"
    return foreign_entry(git_dir) or info_attributes_refusal(git_dir)


def foreign_entry(git_dir: Path) -> str | None:
    """The first entry under ``git_dir`` that is not a plain file or folder of its own
    file system, said as a refusal; None if there is none."""
    device = os.lstat(git_dir).st_dev
    folders = [str(git_dir)]  # (paths as strings: a Path per loose object cost 3% of a worker)
    seen = 0
    while folders:
        folder = folders.pop()
        try:
            listing = os.scandir(folder)
        except OSError as exc:
            return f"{GIT_DIR_RULE}: cannot read {folder}: {exc.strerror}"
        with listing:
            for entry in listing:
                seen += 1
                if seen > MAX_ENTRIES:
                    return f"{GIT_DIR_RULE}: {git_dir} holds more than {MAX_ENTRIES} entries"
                if entry.is_symlink():
                    return f"{GIT_DIR_RULE}: {entry.path} is a link"
                if entry.is_dir(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_dev != device:
                        return f"{GIT_DIR_RULE}: {entry.path} is another file system mounted there"
                    folders.append(entry.path)
                elif not entry.is_file(follow_symlinks=False):  # a fifo hangs git (helper-107)
                    return f"{GIT_DIR_RULE}: {entry.path} is neither a file nor a folder"
    return None


MAX_ALTERNATES_BYTES = 64 << 10
"""An ``objects/info/alternates`` larger than this is refused unread."""
ALTERNATES_DEPTH = 5
"""How deep git follows alternates of alternates: it reads the files of stores 0 to 5
levels down (its own repository at 0) and ignores deeper ones."""


MAX_ALTERNATE_STORES = 256
"""Stores a repository may borrow from, its alternates' alternates included."""


def alternates_refusal(git_dir: Path, roots: Sequence[Path]) -> str | None:
    """Why the object stores ``git_dir`` borrows from (``objects/info/alternates``, and
    theirs, as deep as git follows them) must stop kodo, or None: each must lie under
    one of ``roots`` (KODO_REPO_ROOTS, resolved).

    A repository may borrow objects (``git clone --shared``), but one naming a store
    outside the roots had a branch pointing at a commit only that store held checked
    out for the agent, and pushed on delivery: kodo reading, as itself, a repository
    no one allowed (red-team helper-111). The file is read as git reads it
    (:func:`_alternate_entries`), and each store once, as git links it once: a file
    naming its own store twenty times had been read 20**5 times (helper-114)."""
    objects = git_dir / "objects"
    pending = [(objects, 0)]
    seen = {Path(os.path.realpath(objects))}
    while pending:
        objects, depth = pending.pop()
        path = objects / "info" / "alternates"
        kind = _kind(path)
        if kind is None or depth > ALTERNATES_DEPTH:
            continue
        if kind != "file":
            return f"{GIT_DIR_RULE}: {path} is not a plain file"
        try:
            with path.open("rb") as handle:
                text = handle.read(MAX_ALTERNATES_BYTES + 1)
        except OSError as exc:
            return f"{GIT_DIR_RULE}: cannot read {path}: {exc.strerror}"
        if len(text) > MAX_ALTERNATES_BYTES:
            return f"{GIT_DIR_RULE}: {path} is larger than {MAX_ALTERNATES_BYTES} bytes"
        # git reads the file as one C string: it ends at a NUL (helper-115)
        for entry in _alternate_entries(text.partition(b"\0")[0]):
            store = Path(os.path.realpath(os.path.join(objects, os.fsdecode(entry))))
            if store in seen:
                continue
            if not any(store == root or store.is_relative_to(root) for root in roots):
                return (
                    f"{GIT_DIR_RULE}: {path} borrows objects from {store}, outside"
                    " KODO_REPO_ROOTS: kodo reads no repository no one allowed"
                )
            seen.add(store)
            if len(seen) > MAX_ALTERNATE_STORES:
                return f"{GIT_DIR_RULE}: {git_dir} borrows from over {MAX_ALTERNATE_STORES} stores"
            pending.append((store, depth + 1))
    return None


def _alternate_entries(text: bytes) -> list[bytes]:
    """The stores an alternates file names, scanned as git's ``parse_alt_odb_entry``
    scans it: a ``#`` comment runs to the line feed; an entry starting with ``"`` that
    unquotes is the unquoted name, wherever its closing quote falls (across a line feed
    too), and git skips the one character after that quote, whatever it is; anything
    else runs to the line feed. Splitting at line feeds first had read ``"foo`` LF
    ``"X/elsewhere/objects`` as two names inside the roots, where git borrows
    ``/elsewhere/objects`` (red-team helper-114)."""
    chars = text.decode("latin-1")
    entries: list[bytes] = []
    at = 0
    while at < len(chars):
        quoted = c_unquoted(chars, at, encoding="latin-1") if chars[at] == '"' else None
        if quoted is not None:
            entry, end = quoted
        else:
            end = chars.find("\n", at)
            end = len(chars) if end < 0 else end
            entry = b"" if chars[at] == "#" else chars[at:end].encode("latin-1")
        at = end + 1  # (past the separator, or the character after a closing quote)
        if entry:
            entries.append(entry)
    return entries


MAX_ATTRIBUTES_BYTES = 64 << 10
"""An ``info/attributes`` larger than this is refused unread."""


def info_attributes_refusal(common_dir: Path) -> str | None:
    """Why ``<common_dir>/info/attributes`` must stop kodo, or None (absent, or only
    blank lines and comments).

    git reads that file even with no work tree, where kodo shows a change (the
    ``patch.diff`` a reviewer reads) so that no tree's ``.gitattributes`` decides it:
    ``*.py -diff`` there turned a plain script into a base85 ``GIT binary patch`` nobody
    could read, committed and verified all the same (red-team helper-104). git 2.39
    cannot be told to skip it, so a repository setting attributes there is refused;
    ``core.attributesFile`` kodo points at /dev/null itself (shared.gitcmd)."""
    path = common_dir / "info" / "attributes"
    kind = _kind(path)
    if kind is None:
        return None
    said = f"{GIT_DIR_RULE}: {path} sets attributes for every tree (how a change is shown)"
    if kind != "file":
        return said
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_ATTRIBUTES_BYTES + 1)
    except OSError as exc:
        return f"{GIT_DIR_RULE}: cannot read {path}: {exc.strerror}"
    if len(text) > MAX_ATTRIBUTES_BYTES:
        return said
    lines = (line.strip() for line in text.splitlines())
    if any(line and not line.startswith(b"#") for line in lines):
        return f"{said} (move them to .gitattributes, which kodo never lets decide that)"
    return None


def _kind(path: Path) -> str | None:
    """``dir``, ``link``, ``file`` or ``other`` as lstat says; None if nothing is there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"
