"""An agent's file can be of any size (the policy bounds files and lines, not bytes):
judging it never holds it whole in the worker. Measured in a process of its own, which
stages the agent's edits as ApplyPatchST does and reports its peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MB = 200

STAGE = """
import json, resource, sys
from pathlib import Path
from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import ensure_worktree, quarantined, stage_edits

base, mb = Path(sys.argv[1]), int(sys.argv[2])
repo = create_sample_repo(base / "repo")
(repo / ".gitattributes").write_text("big.txt binary\\n")  # numstat then counts no lines
import subprocess
subprocess.run(["git", "-C", str(repo), "add", ".gitattributes"], check=True)
subprocess.run(["git", "-C", str(repo), "-c", "user.name=k", "-c", "user.email=k@k",
                "commit", "-q", "-m", "attributes"], check=True)
tree = ensure_worktree(repo, base / "ws", "run1", "HEAD")
with open(tree.path / "big.txt", "wb") as out:  # one line of text, as the agent wrote it
    for _ in range(mb):
        out.write(b"a" * (1 << 20))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with quarantined(tree, base / "ws") as held:
    changes = stage_edits(held)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"changes": [[c.path, c.added] for c in changes],
                  "grew_mb": (after - before) / 1024}))
"""


def test_a_huge_text_file_git_calls_binary_is_counted_a_chunk_at_a_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STAGE, str(tmp_path), str(MB)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nstaging a {MB} MB one-line file grew the worker by {said['grew_mb']:.0f} MB")
    assert ["big.txt", 1] in said["changes"], "its one line counted (git said binary)"
    assert said["grew_mb"] < MB / 4, "the file was never held whole"
