"""``run_git`` feeds stdin in a gevent-patched process too (oc-compat's build agent
applies its edits with ``git apply -`` there): gevent's ``subprocess.run`` refuses a
``stdin`` keyword beside ``input``, so the call must name only one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROGRAM = """
from gevent import monkey

monkey.patch_all(ssl=False)
import sys
from pathlib import Path

from shared.gitcmd import run_git

repo = Path(sys.argv[1])
fed = run_git(repo, ["hash-object", "--stdin"], stdin=b"hello\\n")
unfed = run_git(repo, ["rev-parse", "--is-inside-work-tree"])
print(fed.returncode, fed.stdout.decode().strip(), unfed.stdout.decode().strip())
"""


def test_run_git_feeds_stdin_in_a_gevent_patched_process(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # the blob id of "hello\n", as `git hash-object` computes it anywhere
    assert done.stdout.split() == ["0", "ce013625030ba8dba906f756967f9e9ca394464a", "true"]
