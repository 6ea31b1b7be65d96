"""A hostile agent races kodo's check of a worktree's ``.git`` pointer.

Every worktree lies in the daemon's one writable folder, so a process an agent left
running can swap a run's ``.git`` pointer at any moment. kodo checks the pointer before
running git in a worktree (worktree_guard); a git that found its git dir through the
pointer would read it again, after the check, and could be shown a git dir of the
agent's own: its config's filter drivers then run as kodo, outside any sandbox, and its
index and HEAD decide what kodo stages, judges and resets.

The attacker (tests/integration/worker/hostile_watcher.py, ``pointer``) waits for the K-th read of
the pointer, puts a pointer to its own git dir in place, and puts git's pointer back
after the next read, so every check that comes after sees git's pointer again. For each
K the run must either go on with its own git dir or fail closed naming the rule; the
agent's git dir is never used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from tests.integration.worker.racing import Racers, run_through

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's"),
]

READS_ATTACKED = range(1, 25)


def _planted_gitdir(folder: Path, marker: Path) -> Path:
    """A git dir of the agent's own: one commit, and a filter driver (for every path, by
    its ``info/attributes``) that leaves ``marker`` when git runs it."""
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    (folder / "planted.txt").write_text("the agent's\n")
    ident = ["-c", "user.name=a", "-c", "user.email=a@b"]
    subprocess.run(["git", "-C", str(folder), "add", "planted.txt"], check=True)
    subprocess.run(["git", "-C", str(folder), *ident, "commit", "-qm", "x"], check=True)
    gitdir = folder / ".git"
    program = f"sh -c 'echo ran >> {marker}; cat'"
    for key in ("filter.evil.clean", "filter.evil.smudge"):
        subprocess.run(["git", "--git-dir", str(gitdir), "config", key, program], check=True)
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "attributes").write_text("* filter=evil\n")
    return gitdir


@pytest.mark.parametrize("k", READS_ATTACKED)
def test_a_pointer_swapped_between_kodos_check_and_its_git_is_never_followed(
    rt: Runtime, repo: Path, tmp_path: Path, k: int
) -> None:
    marker = tmp_path / "agent-program-ran"
    planted = _planted_gitdir(rt.settings.workspace_dir.parent / f"planted-{k}", marker)
    planted_index = (planted / "index").read_bytes()

    with Racers() as racers:
        run_through(rt, repo, "pointer", planted, k, racers)

    assert not marker.exists(), "a filter driver of the agent's git dir ran as kodo"
    assert (planted / "index").read_bytes() == planted_index, "kodo's git used the agent's"
