"""A hostile agent's background process: it strikes at a run's worktree between kodo's
reads of the worktree's ``.git`` (kodo checks the pointer before it works there).

``python hostile_watcher.py MODE WORKTREE TARGET K`` watches WORKTREE with inotify and
counts each time anything finishes reading ``WORKTREE/.git``:

* ``pointer``: after the K-th read it renames a pointer to the git dir TARGET over
  ``.git``, and after the next read puts git's own pointer back. A check followed by a
  git that reads the pointer again is shown git's pointer by the check and TARGET by
  git (a check-then-use race); the next check sees git's pointer again.
* ``folder``: after the K-th read it moves WORKTREE aside (the workspaces folder is the
  daemon's to write) and leaves a symlink to the folder TARGET in its place.

Prints ``ready`` once the watch is set; runs until killed. Linux only (ctypes inotify).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

IN_CLOSE_NOWRITE = 0x10
_EVENT = struct.Struct("iIII")


def main(mode: str, worktree: Path, target: Path, k: int) -> None:
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
            if mode == "folder" and reads == k:
                worktree.rename(worktree.with_name(f".{worktree.name}.aside"))
                worktree.symlink_to(target)
            elif mode == "pointer" and reads == k:
                theirs.write_text(f"gitdir: {target}\n")
                os.rename(theirs, dotgit)
            elif mode == "pointer" and reads == k + 1:
                os.rename(own, dotgit)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
