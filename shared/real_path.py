"""A path's real location, read from the kernel's own resolution of it.

``Path.resolve()`` and ``os.path.realpath`` walk a path in Python: an ``lstat`` (and a
``readlink`` for a link) per component, and ``Path.resolve`` walks it twice when the
path does not exist. The worker resolves about eighty paths per run (git's sandbox
mounts, the config listing's key, the worktree guards), each eight or more components
deep, and the walk was a few per cent of its CPU. Opening the path with ``O_PATH`` (no
read, no permission beyond search) lets the kernel resolve it once; the descriptor's
``/proc/self/fd`` entry names where it landed.

The answer is the same as the walk's: links followed, ``..`` taken after them,
absolute. Whatever the kernel cannot resolve (a missing component, a loop, a path not
reachable from the process's root, ``/proc`` absent) is left to the walk itself, so
errors and the non-strict answer for a missing tail are exactly the walk's. Both are
one reading of a path that may change right after: neither is a guarantee that it
still lands there, and callers that need one hold a descriptor.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_DELETED = " (deleted)"  # the kernel's suffix for an entry unlinked while open


def _kernel_real(path: str | Path) -> str | None:
    """Where the kernel resolves ``path`` to, or None when it cannot say plainly."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    finally:
        os.close(fd)
    # "(unreachable)/..." lies outside the process's root; a " (deleted)" suffix may be
    # the kernel's or a name's own: the walk tells them apart
    if not real.startswith("/") or real.endswith(_DELETED):
        return None
    return real


def resolved(path: Path) -> Path:
    """``path.resolve()``, read from the kernel where the path exists."""
    real = _kernel_real(path)
    return path.resolve() if real is None else Path(real)


def realpath(path: str) -> str:
    """``os.path.realpath(path)``, read from the kernel where the path exists."""
    real = _kernel_real(path)
    return os.path.realpath(path) if real is None else real


_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR})
"""What ``lstat`` says of a name that is not there (or under a file): the walk takes
such a name as it is, and nothing after it can be there."""


class Resolver:
    """:func:`realpath` for many paths, each at most a few system calls, whatever its
    depth: what the kernel said of each folder is kept for the resolver's life.

    For a path that does not exist the walk of ``os.path.realpath`` takes an ``lstat``
    per component, each walking the prefix again in the kernel: a 1,900-part path cost
    5 ms in an empty folder and 180 ms under a folder that deep, and a turn's tool parts
    may name thousands (red-team helper-128). Here the longest prefix the kernel opens
    is found by bisection (the parent first, the common case), the name after it must be
    missing (``ENOENT``, ``ENOTDIR``: not a dangling link, whose target the walk would
    follow), and the rest is joined as the walk joins it, ``.`` and empty parts dropped.
    A tail with ``..`` in it, or anything else odd, is left to the walk itself.
    """

    def __init__(self) -> None:
        self._seen: dict[str, str | None] = {}

    def __call__(self, path: str) -> str:
        real = self._kernel(path)
        if real is not None:
            return real
        found = self._with_missing_tail(path)
        return os.path.realpath(path) if found is None else found

    def _kernel(self, prefix: str) -> str | None:
        if prefix not in self._seen:
            self._seen[prefix] = _kernel_real(prefix)
        return self._seen[prefix]

    def _with_missing_tail(self, path: str) -> str | None:
        absolute = path if path.startswith("/") else os.path.join(os.getcwd(), path)
        parts = absolute.split("/")  # parts[0] is "": the root, which always opens

        def prefix(end: int) -> str:
            return "/".join(parts[: end + 1]) or "/"

        opened, missing = 0, len(parts) - 1  # the kernel opens prefix(0), not the path
        if len(parts) > 2 and self._kernel(prefix(missing - 1)) is not None:
            opened = missing - 1
        while missing - opened > 1:
            middle = (opened + missing) // 2
            if self._kernel(prefix(middle)) is not None:
                opened = middle
            else:
                missing = middle
        tail = [part for part in parts[opened + 1 :] if part not in ("", ".")]
        if ".." in tail or not tail:
            return None
        try:
            os.lstat(prefix(opened) + "/" + tail[0])
        except OSError as exc:
            if exc.errno not in _MISSING:
                return None
        else:
            return None  # there, yet the kernel cannot open it (a dangling link, a loop)
        head = self._kernel(prefix(opened))
        if head is None:  # pragma: no cover - the root, unopenable
            return None
        return os.path.join(head, *tail)
