"""Delivery and cleanup on real git and Postgres: a succeeded run's branch is pushed to its
repository's delivery remote (a local bare repository), a failing push is recorded and
retried a bounded number of times, and finished runs' worktrees (and the branches of runs
with nothing to keep) are removed after the grace period, never following a link."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import update

from services.cli.db import run_worktrees
from services.worker import git_ops
from services.worker.delivery import clean, deliver
from services.worker.git_ops import (
    exec_root,
    lock_file,
    private_index,
    quarantine_root,
    stage_root,
    trash_root,
)
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.db.models import Run
from shared.domain.run_machine import StepId
from shared.errors import Conflict
from shared.service.delivery import MAX_DELIVERY_ATTEMPTS, due_cleanups
from shared.service.messages import InMemorySender
from shared.service.runs import cancel_run, retry_run
from tests.integration.worker.conftest import RuntimeFactory, approve, new_run, read_run, uow

pytestmark = pytest.mark.integration


def git_out(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def with_origin(repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git_out(repo, "remote", "add", "origin", str(bare))
    return bare


def succeeded(rt: Runtime, repo: Path) -> str:
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "executing"
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    return run_id


def test_a_succeeded_runs_branch_is_pushed_to_the_remote_and_its_sha_recorded(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    rt = make_rt(deliver_remote="origin")
    bare = with_origin(repo, tmp_path)
    run_id = succeeded(rt, repo)

    assert deliver(rt) == [run_id]

    branch = f"kodo/{run_id}"
    local = git_out(repo, "rev-parse", branch)
    assert git_out(bare, "rev-parse", branch) == local, "the remote has the run's commit"
    run = read_run(rt, run_id)
    assert (run.delivered_sha, run.delivery_error, run.delivery_attempts) == (local, None, 1)
    assert run.delivered_at is not None
    assert deliver(rt) == [], "a delivered run is not pushed again"


def test_a_remote_on_this_machine_runs_none_of_its_hooks(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """git runs a local remote's receive-pack itself, as the worker, without kodo's
    hardening: its hooks ran as kodo (any code the remote's owner put there)."""
    rt = make_rt(deliver_remote="origin")
    bare = with_origin(repo, tmp_path)
    ran = tmp_path / "hooks-ran"
    for hook in ("pre-receive", "update", "post-receive", "post-update"):
        script = bare / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho {hook} >> {ran}\n")
        script.chmod(0o755)
    run_id = succeeded(rt, repo)

    assert deliver(rt) == [run_id]

    assert git_out(bare, "rev-parse", f"kodo/{run_id}") == read_run(rt, run_id).delivered_sha
    assert not ran.exists(), ran.read_text() if ran.exists() else ""


def test_a_branch_moved_after_verification_is_not_delivered(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Only the commit the run judged against its plan and verified leaves: a branch
    whose tip moved since (anything that can write the repository's refs) is refused."""
    rt = make_rt(deliver_remote="origin")
    bare = with_origin(repo, tmp_path)
    run_id = succeeded(rt, repo)
    branch = f"kodo/{run_id}"
    verified = git_out(repo, "rev-parse", branch)
    moved = git_out(
        repo, "-c", "user.name=x", "-c", "user.email=x@y", "commit-tree", f"{branch}^{{tree}}",
        "-p", branch, "-m", "unjudged",
    )  # fmt: skip
    git_out(repo, "update-ref", f"refs/heads/{branch}", moved)

    assert deliver(rt) == []

    run = read_run(rt, run_id)
    assert run.delivered_sha is None
    assert run.delivery_error is not None
    assert f"not at the commit the run judged and verified ({verified})" in run.delivery_error
    assert git_out(bare, "branch", "--list") == "", "nothing reached the remote"


def test_a_failing_push_is_recorded_and_tried_a_bounded_number_of_times(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(deliver_remote="origin")
    git_out(repo, "remote", "add", "origin", str(repo.parent / "no-such-remote.git"))
    run_id = succeeded(rt, repo)

    for _ in range(MAX_DELIVERY_ATTEMPTS + 2):
        assert deliver(rt) == []

    run = read_run(rt, run_id)
    assert run.delivered_sha is None
    assert run.delivery_attempts == MAX_DELIVERY_ATTEMPTS
    assert run.delivery_error is not None
    assert "no-such-remote.git is not a bare repository" in run.delivery_error


def test_nothing_is_pushed_without_a_delivery_remote(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    bare = with_origin(repo, tmp_path)
    succeeded(rt, repo)
    assert deliver(rt) == []
    assert git_out(bare, "branch", "--list") == ""


def worktrees(repo: Path) -> str:
    return git_out(repo, "worktree", "list", "--porcelain")


def test_finished_worktrees_go_after_the_grace_and_disposable_branches_with_them(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(worktree_grace_s=0)
    done = succeeded(rt, repo)
    dropped = new_run(rt, repo, goal="Add a note to README.md")
    assert run_step(rt, StepId.COMPILE, dropped, compile_step) == "waiting_input"
    with uow(rt, InMemorySender()) as work:
        cancel_run(work, dropped, now=rt.clock.now())
    kept_tree = Path(read_run(rt, done).worktree_path or "")
    dropped_tree = Path(read_run(rt, dropped).worktree_path or "")
    assert kept_tree.is_dir()
    assert dropped_tree.is_dir()

    assert sorted(clean(rt)) == sorted([done, dropped])

    assert not kept_tree.exists()
    assert not dropped_tree.exists()
    assert str(kept_tree) not in worktrees(repo)
    assert git_out(repo, "branch", "--list", f"kodo/{done}"), "a succeeded run's branch stays"
    assert git_out(repo, "branch", "--list", f"kodo/{dropped}") == "", "a cancelled one goes"
    assert read_run(rt, done).worktree_removed_at is not None
    assert read_run(rt, dropped).branch_removed_at is not None
    assert clean(rt) == [], "cleaned once"


def test_a_cleanup_removes_the_worktrees_folders_with_the_repository_lock_free(
    make_rt: RuntimeFactory, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a large worktree takes seconds: meanwhile the other runs on the
    repository may register theirs (taken without waiting, as their add would)."""
    rt = make_rt(worktree_grace_s=0)
    run_id = succeeded(rt, repo)
    tree = Path(read_run(rt, run_id).worktree_path or "")
    lock = lock_file(rt.settings.workspace_dir, repo)
    free: list[bool] = []
    real = git_ops._rm_tree

    def spied(path: Path) -> subprocess.CompletedProcess[bytes]:
        with lock.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                free.append(False)
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                free.append(True)
        return real(path)

    monkeypatch.setattr(git_ops, "_rm_tree", spied)

    assert clean(rt) == [run_id]

    assert free == [True], "the run's worktree was removed with the lock free"
    assert not tree.exists()
    assert str(tree) not in worktrees(repo)


def test_a_private_checkout_a_crashed_command_left_goes_with_its_run(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A worker killed during ExecuteST leaves the command's private checkout and its
    index (or, made by an earlier kodo, git's record of it): the run's cleanup removes
    them all."""
    rt = make_rt(worktree_grace_s=0)
    run_id = succeeded(rt, repo)
    left = exec_root(rt.settings.workspace_dir) / run_id
    git_out(repo, "worktree", "add", "-q", "--detach", str(left), "HEAD")
    index = private_index(rt.settings.workspace_dir, run_id)
    index.write_bytes(b"DIRC")
    lock = index.with_name(f"{index.name}.lock")  # a git killed while writing it
    lock.write_bytes(b"DIRC")
    assert str(left) in worktrees(repo)

    assert clean(rt) == [run_id]

    assert not left.exists()
    assert not index.exists()
    assert not lock.exists()
    assert str(left) not in worktrees(repo)


def test_what_killed_deliveries_left_beside_the_workspaces_goes_with_its_run(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A build killed mid-judgement leaves its quarantine (which may hold a refused blob),
    a registration its set-aside folder: the run's cleanup removes both, and nothing of
    another run's."""
    rt = make_rt(worktree_grace_s=0)
    run_id = succeeded(rt, repo)
    workspace = rt.settings.workspace_dir
    held = quarantine_root(workspace) / f"{run_id}.0123456789abcdef"
    (held / "ab").mkdir(parents=True)
    (held / "ab" / "cdef").write_bytes(b"a refused blob")
    aside = trash_root(workspace) / f"{run_id}.fedcba9876543210"
    (aside / "filled").mkdir(parents=True)
    others = quarantine_root(workspace) / "another-run.0123456789abcdef"
    others.mkdir()

    assert clean(rt) == [run_id]

    assert not held.exists()
    assert not aside.exists()
    assert others.exists()


def test_the_grace_period_keeps_a_fresh_worktree(make_rt: RuntimeFactory, repo: Path) -> None:
    rt = make_rt(worktree_grace_s=3600)
    run_id = succeeded(rt, repo)
    assert clean(rt) == []
    assert Path(read_run(rt, run_id).worktree_path or "").is_dir()


def test_a_link_left_in_the_worktrees_place_is_removed_never_followed(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    rt = make_rt(worktree_grace_s=0, keep_branches=True)
    run_id = succeeded(rt, repo)
    tree = Path(read_run(rt, run_id).worktree_path or "")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    tree.symlink_to(precious)

    assert clean(rt) == [run_id]

    assert not tree.is_symlink()
    assert (precious / "keep.txt").read_text() == "mine", "the link's target is untouched"


def test_a_failed_run_whose_worktree_was_removed_cannot_resume(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(worktree_grace_s=0)
    run_id = new_run(rt, repo, goal="Add a note to README.md [oc:invalid]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    tree = Path(read_run(rt, run_id).worktree_path or "")
    assert tree.is_dir(), "a failed compile records the worktree it made, for the cleanup"
    assert clean(rt) == [run_id]
    assert not tree.exists()
    with pytest.raises(Conflict, match="worktree was removed"), uow(rt, InMemorySender()) as work:
        retry_run(work, run_id, operator="ops", now=rt.clock.now(), lease_s=30)


def test_a_cleanup_that_fails_is_recorded_and_never_holds_up_the_newer_ones(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Twenty cleanups that always fail used to stay the oldest due, and the pass takes
    twenty: no newer worktree was ever removed again."""
    rt = make_rt(worktree_grace_s=0)
    stuck = succeeded(rt, repo)
    elsewhere = tmp_path / "not-a-workspace" / stuck
    elsewhere.mkdir(parents=True)
    with uow(rt, InMemorySender()) as work:
        work.session.execute(
            update(Run).where(Run.id == stuck).values(worktree_path=str(elsewhere))
        )
    newer = succeeded(rt, repo)

    assert clean(rt) == [newer]

    failed = read_run(rt, stuck)
    assert failed.worktree_removed_at is None
    assert failed.cleanup_failed_at is not None
    assert "is not under" in (failed.cleanup_error or ""), "SQL says why the worktree stays"
    assert elsewhere.is_dir(), "nothing outside the workspaces is touched"
    latest = succeeded(rt, repo)
    with rt.sessions() as s:
        first = due_cleanups(s, now=rt.clock.now(), grace_s=0, limit=1)
    assert [c.run_id for c in first] == [latest], "the failed one waits, and then goes last"
    assert clean(rt) == [latest]
    assert read_run(rt, stuck).cleanup_failed_at == failed.cleanup_failed_at, "not retried yet"


LEAVE_AND_REMOVE = """
import os, sys
from pathlib import Path
from services.worker.git_ops import remove_worktree_dir
root = Path(sys.argv[1])
tree = root / "run-1"
(tree / "d").mkdir(parents=True)
(tree / "d" / "f").write_text("x")
os.chmod(tree / "d", 0)
remove_worktree_dir(tree, root)
print("GONE" if not tree.exists() else "LEFT")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_a_folder_a_command_closed_to_its_owner_is_still_removed(tmp_path: Path) -> None:
    """A non-root worker binds the tree writable: a command can leave a folder of mode 000
    that the worker's own rm cannot enter (a red-team pass: every redelivery and the
    cleanup then failed). The removal gives folders back their owner's rights first."""
    root = Path(tempfile.mkdtemp(prefix="kodo-rm-"))
    try:
        os.chown(root, 65534, 65534)
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                sys.executable,
                "-c",
                LEAVE_AND_REMOVE,
                str(root),
            ],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[3],
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "GONE"
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_a_push_that_crashes_is_recorded_as_a_failed_attempt_and_stops_nothing(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """A repository moved away (or a remote that hangs past its timeout) raises, not a
    git failure: recorded as an attempt like any failed push, so it is given up after a
    bound and never stops the pass that tried it."""
    rt = make_rt(deliver_remote="origin")
    with_origin(repo, tmp_path)
    run_id = succeeded(rt, repo)
    repo.rename(tmp_path / "moved-away")

    assert deliver(rt) == []

    run = read_run(rt, run_id)
    assert run.delivered_sha is None
    assert run.delivery_attempts == 1
    assert run.delivery_error is not None
    assert run.delivery_error.startswith("FileNotFoundError: ")
    assert str(repo) in run.delivery_error, "it names the repository it did not find"


def test_a_run_cancelled_while_it_plans_has_its_worktree_and_branch_cleaned(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """CompileST makes the worktree, then parks on its plan call; a run cancelled then
    (or stopped by its budget) never records the outcome that names its worktree and
    branch. The call's claim names the worktree: its folder, git's record of it and its
    branch still go once it rests."""
    rt = make_rt(worktree_grace_s=0, oc_async=True)
    run_id = new_run(rt, repo, goal="Add a note to README.md [oc:slow=60000]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt, InMemorySender()) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    tree = rt.settings.workspace_dir / run_id
    assert tree.is_dir(), "the worktree the plan was being made in"
    run = read_run(rt, run_id)
    assert run.worktree_path == str(tree), "named by its call's claim"
    assert run.branch is None, "no outcome named its branch"
    assert git_out(repo, "branch", "--list", f"kodo/{run_id}")
    staged = stage_root(rt.settings.workspace_dir) / run_id  # as a checkout's timeout leaves
    (staged / "half").mkdir(parents=True)
    listed = run_worktrees(rt.settings.database_url)
    assert (str(repo), str(tree)) in listed, "`kodo db reset` removes it too"

    assert clean(rt) == [run_id]

    assert not tree.exists()
    assert not staged.exists()
    assert str(tree) not in worktrees(repo)
    assert git_out(repo, "branch", "--list", f"kodo/{run_id}") == "", "a cancelled run's"
    run = read_run(rt, run_id)
    assert run.worktree_removed_at is not None
    assert run.branch_removed_at is not None
    assert clean(rt) == [], "cleaned once"


def test_a_run_that_never_made_a_worktree_is_not_swept(make_rt: RuntimeFactory, repo: Path) -> None:
    rt = make_rt(worktree_grace_s=0)
    run_id = new_run(rt, repo)
    with uow(rt, InMemorySender()) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    assert clean(rt) == [], "nothing of it is on disk: no pass spends git on it"
