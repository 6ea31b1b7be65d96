"""Files only their owner may read, from their first byte."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the start: a file written with
    the umask and then chmod'ed could be opened in between by anyone, who then keeps
    reading it (a daemon's password: red-team helper-133). A leftover temporary file is
    removed first (it may have other modes or owners); a link is never followed."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
