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
