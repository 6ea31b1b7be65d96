"""A hostile agent's background process: it swaps a worktree's ``.git`` pointer between
kodo's reads of it.

``python pointer_flipper.py WORKTREE PLANTED_GITDIR K`` watches WORKTREE with inotify;
after the K-th time anything finishes reading ``.git`` it renames a pointer to
PLANTED_GITDIR over it, and after the next read puts git's own pointer back. A check
that reads the pointer, followed by a git process that reads it again, is thus shown
git's pointer by the check and the planted one by git (a check-then-use race), and the
next check sees git's pointer again. Prints ``ready`` once the watch is set; runs until
killed. Linux only (inotify through ctypes).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

IN_CLOSE_NOWRITE = 0x10
_EVENT = struct.Struct("iIII")


def main(worktree: Path, planted: Path, k: int) -> None:
    dotgit = worktree / ".git"
    own = worktree.parent / f".{worktree.name}.own"
    theirs = worktree.parent / f".{worktree.name}.theirs"
    own.write_bytes(dotgit.read_bytes())  # before the watch: not counted
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(worktree), IN_CLOSE_NOWRITE) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    print("ready", flush=True)
    reads = 0
    while True:
        buf = os.read(fd, 65536)
        at = 0
        while at < len(buf):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, at)
            name = buf[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
            at += _EVENT.size + length
            if name != b".git":
                continue
            reads += 1
            if reads == k:
                theirs.write_text(f"gitdir: {planted}\n")
                os.rename(theirs, dotgit)
            elif reads == k + 1:
                os.rename(own, dotgit)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
