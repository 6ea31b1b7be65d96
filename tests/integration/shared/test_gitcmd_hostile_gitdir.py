"""A repository whose git dir holds a FIFO where git keeps a small file: kodo's own read
of it (before git starts) used to block for good, holding the worker thread and, under
the repository's lock, every later run of that repository. Now kodo refuses the file at
once and git's call is bounded by its timeout like any other."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from shared.gitcmd import GitTimeout, run_git

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["HEAD", "commondir"])
def test_a_fifo_in_the_git_dir_holds_a_git_call_no_longer_than_its_timeout(
    tmp_path: Path, name: str
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    target = repo / ".git" / name
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    began = time.monotonic()
    try:
        # git itself opens the FIFO and waits (first for kodo's config listing): killed
        with pytest.raises(GitTimeout):
            run_git(repo, ["branch", "--list", "kodo/x"], timeout_s=2)
        assert time.monotonic() - began < 10
    finally:
        with contextlib.suppress(OSError):  # free a reader, if one is left (none: ENXIO)
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
