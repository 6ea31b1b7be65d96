"""A worktree whose ``.git`` pointer was rewritten is refused before git runs there."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    GitError,
    WorktreeTampered,
    ensure_worktree,
    open_worktree,
    reset_worktree,
    stage_edits,
    staged_patch,
)
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.worktree_guard import (
    FOLDER,
    MAX_DEPTH,
    remove_special_files,
    special_files_problem,
    worktree_gitdir_problem,
)
from shared.db.models import Run
from shared.domain.policy import MAX_PATCH_BYTES
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, commits_on_branch, diagnostic, new_run
from tests.integration.worker.hostile import git_out, hostile, patch_of, plan_of

pytestmark = pytest.mark.integration


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    return repo, tree.path


def test_the_pointer_git_wrote_is_accepted(checkout: tuple[Path, Path]) -> None:
    repo, worktree = checkout
    assert worktree_gitdir_problem(worktree, repo) is None


def test_a_pointer_to_a_gitdir_planted_inside_the_worktree_is_refused(
    checkout: tuple[Path, Path],
) -> None:
    repo, worktree = checkout
    planted = worktree / "evil"
    subprocess.run(["git", "init", "-q", str(planted)], check=True)
    (planted / ".git" / "config").write_text("[core]\n\tfsmonitor = touch /tmp/pwned\n")
    (worktree / ".git").write_text(f"gitdir: {planted / '.git'}\n")
    problem = worktree_gitdir_problem(worktree, repo)
    assert problem is not None
    assert problem.startswith("worktree_gitdir:")


def test_a_pointer_to_another_runs_admin_dir_is_refused(
    checkout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, worktree = checkout
    other = ensure_worktree(repo, tmp_path / "ws", "run-2", "HEAD").path
    (worktree / ".git").write_text((other / ".git").read_text())
    problem = worktree_gitdir_problem(worktree, repo)
    assert problem is not None
    assert "another worktree" in problem


def test_a_dotgit_replaced_by_a_directory_or_symlink_is_refused(
    checkout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, worktree = checkout
    (worktree / ".git").unlink()
    (worktree / ".git").symlink_to(repo / ".git")
    assert worktree_gitdir_problem(worktree, repo) is not None
    (worktree / ".git").unlink()
    (worktree / ".git").mkdir()
    assert worktree_gitdir_problem(worktree, repo) is not None


def test_a_dotgit_replaced_by_a_fifo_is_refused_without_waiting_for_a_writer(
    checkout: tuple[Path, Path],
) -> None:
    """Reading a FIFO waits for a writer: the check (every step makes it) would hang its
    worker thread for good, and ensure_worktree's under the repository's lock. Run in a
    thread so a regression fails this test instead of hanging the suite."""
    repo, worktree = checkout
    (worktree / ".git").unlink()
    os.mkfifo(worktree / ".git")
    answers: list[str | None] = []
    checking = threading.Thread(
        target=lambda: answers.append(worktree_gitdir_problem(worktree, repo)), daemon=True
    )
    checking.start()
    checking.join(timeout=10)
    assert answers, "the check is still waiting on the FIFO"
    assert answers[0] is not None
    assert "FIFO" in answers[0]


def test_a_huge_sparse_dotgit_is_refused_unread(checkout: tuple[Path, Path]) -> None:
    """A terabyte of holes costs the agent nothing; read whole, it raised MemoryError (a
    crash, not the rule) or brought the worker down."""
    repo, worktree = checkout
    pointer = (worktree / ".git").read_bytes()
    with (worktree / ".git").open("r+b") as handle:
        handle.truncate(1 << 40)
        handle.write(pointer)
    problem = worktree_gitdir_problem(worktree, repo)
    assert problem is not None
    assert "larger than a pointer" in problem


def test_apply_fails_closed_when_the_agent_rewrote_the_worktree_pointer(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    with rt.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.worktree_path is not None
        worktree = Path(run.worktree_path)
    planted = worktree / "evil"
    subprocess.run(["git", "init", "-q", str(planted)], check=True)
    marker = tmp_path / "fsmonitor-ran"
    (planted / ".git" / "config").write_text(f"[core]\n\tfsmonitor = touch {marker}\n")
    (worktree / ".git").write_text(f"gitdir: {planted / '.git'}\n")

    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "failed"

    assert diagnostic(rt, run_id)["rule"] == "worktree_gitdir"
    assert not marker.exists()
    assert commits_on_branch(repo, run_id) == 0


def _planted_gitdir_on_the_runs_branch(worktree: Path, branch: str) -> Path:
    """A git dir of the agent's own whose HEAD names the run's branch, and the run's
    ``.git`` pointed at it: git asked there would say the worktree is the run's."""
    planted = worktree.parent / "planted"
    subprocess.run(["git", "init", "-q", "-b", branch, str(planted)], check=True)
    (planted / "f").write_text("x\n")
    subprocess.run(["git", "-C", str(planted), "add", "f"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(planted),
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "-qm",
            "x",
        ],
        check=True,
    )
    (worktree / ".git").write_text(f"gitdir: {planted / '.git'}\n")
    return planted


def test_a_later_delivery_refuses_a_worktree_whose_pointer_was_rewritten(
    checkout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, worktree = checkout
    _planted_gitdir_on_the_runs_branch(worktree, "kodo/run-1")

    with pytest.raises(WorktreeTampered) as refused:
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")

    assert refused.value.rule == "worktree_gitdir"
    assert str(refused.value).startswith("worktree_gitdir:")


def test_compile_fails_closed_on_a_worktree_whose_pointer_was_rewritten(
    rt: Runtime, repo: Path
) -> None:
    """CompileST's later delivery (after its call) finds the worktree an earlier one
    made; another run's agent rewrote its pointer meanwhile. Before this check, git was
    asked which branch the worktree was on, answered from the planted git dir, and the
    run went on to its plan on a worktree that git no longer saw as the run's."""
    run_id = new_run(rt, repo)
    worktree = ensure_worktree(repo, rt.settings.workspace_dir, run_id, "HEAD").path
    _planted_gitdir_on_the_runs_branch(worktree, f"kodo/{run_id}")

    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"

    assert diagnostic(rt, run_id)["rule"] == "worktree_gitdir"


def test_a_worktree_no_longer_on_the_runs_branch_is_refused(
    checkout: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, worktree = checkout
    subprocess.run(["git", "-C", str(worktree), "checkout", "-q", "--detach"], check=True)

    with pytest.raises(GitError, match="is on no branch, expected kodo/run-1"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def test_another_runs_hostile_agent_cannot_hand_a_compiling_run_a_git_dir_of_its_own(
    rt: Runtime, repo: Path
) -> None:
    """Run A made its worktree and is waiting on its plan call; run B's build agent, a
    scripted hostile model that ignores its rules, rewrites A's pointer to a git dir it
    built on A's branch. A's next CompileST delivery refuses the worktree."""
    victim = new_run(rt, repo)
    ensure_worktree(repo, rt.settings.workspace_dir, victim, "HEAD")  # its first delivery

    def hijack_the_sibling(directory: Path) -> None:
        _planted_gitdir_on_the_runs_branch(directory.parent / victim, f"kodo/{victim}")

    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
    )
    model.actions[StepId.APPLY_PATCH.value] = hijack_the_sibling
    attacker = new_run(rt, repo)
    assert run_step(rt, StepId.COMPILE, attacker, compile_step) == "waiting_input"
    approve(rt, attacker)
    run_step(rt, StepId.APPLY_PATCH, attacker, apply_patch_step)
    assert (
        (rt.settings.workspace_dir / victim / ".git")
        .read_text()
        .startswith(f"gitdir: {rt.settings.workspace_dir / 'planted'}")
    ), "the attack landed"

    assert run_step(rt, StepId.COMPILE, victim, compile_step) == "failed"

    assert diagnostic(rt, victim)["rule"] == "worktree_gitdir"


def test_git_never_reads_the_pointer_once_the_worktree_was_opened(tmp_path: Path) -> None:
    """The pointer is checked when the worktree is opened; every later git is told the
    git dir that check confirmed. A pointer swapped afterwards (a check-then-use race)
    is never followed: not its config's filter driver, not its index or HEAD."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    planted = _planted_gitdir_on_the_runs_branch(tree.path, "kodo/run-1")
    marker = tmp_path / "filter-ran"
    subprocess.run(
        ["git", "-C", str(planted), "config", "filter.evil.clean", f"touch {marker}; cat"],
        check=True,
    )
    (planted / ".git" / "info" / "attributes").write_text("* filter=evil\n")
    assert worktree_gitdir_problem(tree.path, repo) is not None, "the pointer was swapped"
    (tree.path / "README.md").write_text("changed\n")

    changes = stage_edits(tree)
    patch = staged_patch(tree, max_bytes=MAX_PATCH_BYTES)
    reset_worktree(tree)

    assert [c.path for c in changes] == ["README.md"]
    assert b"+changed" in patch.diff
    assert not marker.exists()
    assert "A tiny calculator" in (tree.path / "README.md").read_text()
    assert not (tree.path / "f").exists(), "the planted HEAD's tree was never checked out"


def _swap_for_a_link(worktree: Path, to: Path) -> None:
    """What a daemon ignoring its rules can do in the workspaces folder, which it may
    write as a whole: move a run's folder aside and leave a symlink in its place."""
    worktree.rename(worktree.with_name(f".{worktree.name}.aside"))
    worktree.symlink_to(to)


def test_a_worktree_folder_replaced_by_a_link_to_another_runs_is_refused(
    tmp_path: Path,
) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    victim = ensure_worktree(repo, tmp_path / "ws", "victim", "HEAD")
    attacker = ensure_worktree(repo, tmp_path / "ws", "attacker", "HEAD")
    _swap_for_a_link(attacker.path, victim.path)

    with pytest.raises(WorktreeTampered, match="is a symlink"):
        open_worktree(attacker.path, repo)


def test_a_worktree_whose_git_dir_is_on_another_branch_is_refused(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    subprocess.run(["git", "-C", str(tree.path), "checkout", "-qb", "elsewhere"], check=True)

    with pytest.raises(WorktreeTampered, match="is on elsewhere, expected kodo/run-1"):
        open_worktree(tree.path, repo)


def test_another_runs_agent_cannot_commit_its_change_onto_a_runs_branch(
    rt: Runtime, repo: Path
) -> None:
    """Run V was built. Run X's plan agent (a scripted hostile model whose daemon ignores
    its rules) moves X's folder aside and links ``<workspaces>/X`` to V's. X's
    ApplyPatchST must not reset V's worktree nor commit X's change on ``kodo/V``."""
    readme_edit = (
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
    )
    calc_edit = (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        "@@ -3,3 +3,4 @@\n \n def add(a: int, b: int) -> int:\n     return a + b\n"
        "+# the attacker run's line\n"
    )
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan_of({"path": "README.md", "change": "modify"})
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(readme_edit)
    victim = new_run(rt, repo, goal="Document calc")
    assert run_step(rt, StepId.COMPILE, victim, compile_step) == "waiting_input"
    approve(rt, victim)
    assert run_step(rt, StepId.APPLY_PATCH, victim, apply_patch_step) == "deciding"
    victims_tip = git_out(repo, "rev-parse", f"kodo/{victim}")
    victims_tree = rt.settings.workspace_dir / victim

    model.scripts[StepId.COMPILE.value] = plan_of({"path": "calc.py", "change": "modify"})
    model.actions[StepId.COMPILE.value] = lambda folder: _swap_for_a_link(folder, victims_tree)
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(calc_edit)
    attacker = new_run(rt, repo, goal="Comment calc")
    assert run_step(rt, StepId.COMPILE, attacker, compile_step) == "waiting_input"
    approve(rt, attacker)

    assert run_step(rt, StepId.APPLY_PATCH, attacker, apply_patch_step) == "failed"
    assert diagnostic(rt, attacker)["rule"] == "worktree_gitdir"
    assert git_out(repo, "rev-parse", f"kodo/{victim}") == victims_tip
    assert "attacker run" not in (victims_tree / "calc.py").read_text()


def test_a_tree_nested_past_the_limit_is_refused_without_walking_it_all(tmp_path: Path) -> None:
    """A daemon makes thousands of nested folders in a second; the walk opens each folder
    from its parent (one open per folder) and stops at MAX_DEPTH, naming the rule (it
    reopened every folder from the root: 4,000 levels took 8 s, 30,000 minutes)."""
    root = tmp_path / "tree"
    root.mkdir()
    current = os.open(root, FOLDER)
    for _ in range(5000):  # by descriptor, as the daemon would: no PATH_MAX
        os.mkdir("d", dir_fd=current)
        deeper = os.open("d", FOLDER, dir_fd=current)
        os.close(current)
        current = deeper
    os.close(current)
    fd = os.open(root, FOLDER)
    try:
        problem = special_files_problem(fd)
        remove_special_files(fd)  # reset_worktree's first act ends as soon
    finally:
        os.close(fd)
        subprocess.run(["rm", "-rf", str(root)], check=True)

    assert problem is not None
    error, paths = problem
    assert error.startswith("special_file:")
    assert f"nested deeper than {MAX_DEPTH}" in error
    assert paths == ["/".join(["d"] * (MAX_DEPTH + 1))]
