"""What ``git add`` stages for a build reaches the repository's object store only once
the change passed every judgement (git_ops.quarantined).

The daemon's sandbox may read the repository (its ``.git`` included), and git reads each
file by name: another run's agent that swaps a folder for a link while git reads it has
git hash whatever the link leads to (a red-team pass staged a credentials file the
repository's config includes). The judgement refuses such a change; its objects must not
outlive the refusal where the agent could read them back.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    admit,
    commit_index,
    ensure_worktree,
    quarantine_root,
    quarantined,
    stage_edits,
)
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from shared.hashing import git_blob_digest
from tests.integration.worker.conftest import approve, new_run
from tests.integration.worker.hostile import git_out, hostile, patch_of, plan_of

pytestmark = pytest.mark.integration

UNIQUE = "a line no object of the repository holds: 7f0c1e2a\n"
ADD_NOTES = (
    "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n"
    f"+++ b/NOTES.md\n@@ -0,0 +1 @@\n+{UNIQUE}"
)


def _stored(repo: Path, content: str) -> bool:
    digest = git_blob_digest(len(content.encode()), 40)
    digest.update(content.encode())
    found = subprocess.run(["git", "cat-file", "-e", digest.hexdigest()], cwd=repo, check=False)
    return found.returncode == 0


def _build(rt: Runtime, repo: Path, plan: dict[str, object]) -> str:
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(ADD_NOTES)
    run_id = new_run(rt, repo, goal="Add notes")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    return run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)


def test_a_refused_change_leaves_no_object_in_the_repository(rt: Runtime, repo: Path) -> None:
    status = _build(rt, repo, plan_of({"path": "README.md", "change": "modify"}))

    assert status == "failed"
    assert not _stored(repo, UNIQUE), "the refused blob reached the repository's store"
    assert list(quarantine_root(rt.settings.workspace_dir).iterdir()) == []


def test_an_accepted_change_has_its_objects_in_the_repository(rt: Runtime, repo: Path) -> None:
    status = _build(rt, repo, plan_of({"path": "NOTES.md", "change": "add"}))

    assert status != "failed"
    assert _stored(repo, UNIQUE)
    checked = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert list(quarantine_root(rt.settings.workspace_dir).iterdir()) == []


def test_a_file_git_packs_on_staging_is_admitted_pack_and_index(tmp_path: Path) -> None:
    """Past ``core.bigFileThreshold`` ``git add`` writes a pack, not a loose object: the
    pack is admitted with its index, and the commit made of it is whole."""
    repo = create_sample_repo(tmp_path / "repo")
    subprocess.run(["git", "config", "core.bigFileThreshold", "1k"], cwd=repo, check=True)
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    (tree.path / "big.txt").write_text("".join(f"line {i}\n" for i in range(2000)))

    with quarantined(tree, ws) as held:
        changes = stage_edits(held)
        assert [c.path for c in changes] == ["big.txt"]
        assert list((held.quarantine or tmp_path).glob("pack/*.pack")), "git packed it"
        assert admit(held, [c.new_blob for c in changes]) >= 2
    commit = commit_index(tree, "a big file")

    checked = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert git_out(repo, "cat-file", "-t", f"{commit}:big.txt") == "blob"


def test_a_judgement_never_admitted_leaves_the_runs_own_index_as_it_was(tmp_path: Path) -> None:
    """A delivery killed mid-judgement (here: the block left by an error) must leave the
    run's index naming only objects the store holds: one naming the deleted
    quarantine's objects failed every redelivery ("unable to read", a red-team pass)."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    before = (tree.gitdir / "index").read_bytes()
    (tree.path / "NOTES.md").write_text(UNIQUE)

    def killed_mid_judgement() -> None:
        with quarantined(tree, ws) as held:
            stage_edits(held)
            raise RuntimeError("the worker died here")

    with pytest.raises(RuntimeError):
        killed_mid_judgement()

    assert (tree.gitdir / "index").read_bytes() == before
    with quarantined(tree, ws) as again:
        assert [c.path for c in stage_edits(again)] == ["NOTES.md"], "staged anew"


def test_only_the_judged_blobs_are_admitted(tmp_path: Path) -> None:
    """git may hash more than it stages (a file swapped for a folder between its passes):
    an object the judged change does not hold stays out of the store."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    (tree.path / "NOTES.md").write_text(UNIQUE)
    stray = "hashed but never staged: 5d1e9a\n"

    with quarantined(tree, ws) as held:
        changes = stage_edits(held)
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            input=stray.encode(),
            cwd=repo,
            env={**os.environ, **held.object_env()},
            check=True,
            capture_output=True,
        )
        assert admit(held, [c.new_blob for c in changes]) == 1

    assert _stored(repo, UNIQUE)
    assert not _stored(repo, stray)


def test_admitted_objects_keep_a_shared_repositorys_permissions(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    subprocess.run(["git", "config", "core.sharedRepository", "group"], cwd=repo, check=True)
    store = repo / ".git" / "objects"
    store.chmod(0o2775)
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD")
    (tree.path / "NOTES.md").write_text(UNIQUE)

    with quarantined(tree, ws) as held:
        changes = stage_edits(held)
        blob = changes[0].new_blob
        shutil.rmtree(store / blob[:2], ignore_errors=True)  # a folder kodo must make
        admit(held, [blob])

    assert stat.S_IMODE((store / blob[:2]).stat().st_mode) == 0o2775


def test_with_the_sandbox_off_staging_still_writes_only_the_quarantine(tmp_path: Path) -> None:
    """KODO_SANDBOX=off runs git on the folder's name, without bubblewrap: the quarantine
    holds all the same."""
    repo = create_sample_repo(tmp_path / "repo")
    ws = tmp_path / "ws"
    tree = ensure_worktree(repo, ws, "run-1", "HEAD", bwrap=None)
    before = (tree.gitdir / "index").read_bytes()
    (tree.path / "NOTES.md").write_text(UNIQUE)

    with quarantined(tree, ws) as held:
        assert [c.path for c in stage_edits(held)] == ["NOTES.md"]

    assert not _stored(repo, UNIQUE)
    assert (tree.gitdir / "index").read_bytes() == before
