"""Reading a small file of a repository's git dir without trusting what is there.

``Path.read_bytes`` follows a link to ``/dev/zero`` and reads until memory runs out, and
blocks for good opening a FIFO: a repository whose ``.git/HEAD`` or ``commondir`` was one
held the worker thread that read it (often under the repository's lock, so every run
of that repository after it) before git, and git's timeout, ever started. git's own
small files are read here instead: the last path part not followed, opened without
blocking, a regular file only, and never more than ``cap`` bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

SMALL = 64 * 1024
"""More than any HEAD, pointer or ``alternates`` list git writes."""


class NotPlainFile(OSError):
    """Not a regular file of at most the cap: a link, a FIFO, a device, a folder, too big."""


def read_plain(path: Path, cap: int = SMALL) -> bytes:
    """The content of the regular file ``path``, at most ``cap`` bytes, else an OSError
    (:class:`NotPlainFile` for what is there but is no plain small file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPlainFile(errno.ELOOP, "a link, not followed", str(path)) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotPlainFile(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, cap + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise NotPlainFile(errno.EFBIG, f"more than {cap} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_plain_text(path: Path, cap: int = SMALL) -> str:
    """:func:`read_plain` decoded as UTF-8 (a UnicodeDecodeError if it is not)."""
    return read_plain(path, cap).decode("utf-8")
