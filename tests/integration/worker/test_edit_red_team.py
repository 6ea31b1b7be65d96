"""Red-team attacks on the edit path: a build agent that leaves the worktree shaped so
kodo's own git (staging, judging, undoing) or its later steps run or show something else
than what was judged.

Each attack is an action a rule-ignoring daemon could take in the worktree (it may write
anything there, nested repositories and special files included); each must fail closed
naming its rule, run nothing of the agent's outside a sandbox and leave nothing behind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from services.worker import git_ops
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import approve, commits_on_branch, diagnostic, new_run
from tests.integration.worker.hostile import commit_all, git_out, hostile, patch_of, plan_of

pytestmark = pytest.mark.integration

README_ONLY = plan_of({"path": "README.md", "change": "modify"})
README_EDIT = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1,3 +1,4 @@\n # calc\n \n A tiny calculator used to demonstrate kodo.\n+More.\n"
)


def _applied(
    rt: Runtime,
    repo: Path,
    plan: dict[str, object],
    diff: str,
    action: Callable[[Path], None],
    files: list[str] | None = None,
) -> tuple[str, str]:
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = plan
    model.scripts[StepId.APPLY_PATCH.value] = patch_of(diff, files)
    model.actions[StepId.APPLY_PATCH.value] = action
    run_id = new_run(rt, repo, goal="Tidy the docs")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)
    return run_id, run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)


def _rules(rt: Runtime, run_id: str) -> list[str]:
    return [v["rule"] for v in diagnostic(rt, run_id)["violations"]]


def _leftovers(worktree: Path) -> list[str]:
    """Every entry under the worktree besides its ``.git`` pointer and HEAD's files."""
    tracked = set(git_out(worktree, "ls-files").splitlines())
    found = []
    for root, dirs, names in os.walk(worktree):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), worktree)
            if rel != ".git" and rel not in tracked:
                found.append(rel)
    return sorted(found)


def _nested_repo_with_filter(marker: Path) -> Callable[[Path], None]:
    """``vendor/`` is a repository of the agent's: its config names a clean filter, its
    attributes apply it, and a file it tracks is modified (so a status there runs it)."""

    def act(directory: Path) -> None:
        vendor = directory / "vendor"
        vendor.mkdir()
        (vendor / "lib.py").write_text("x = 1\n")
        (vendor / ".gitattributes").write_text("* filter=evil\n")
        git_out(vendor, "init", "-q")
        commit_all(vendor, "vendored")
        git_out(vendor, "config", "filter.evil.clean", f"sh -c 'touch {marker}; cat'")
        (vendor / "lib.py").write_text("x = 2\n")

    return act


def test_a_nested_repositorys_filter_driver_never_runs_when_kodo_undoes_the_attempt(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    """Staged, ``vendor`` is a gitlink (refused: submodule); undoing the attempt must not
    let a ``git status`` recurse into it and run the filter its own config names (that
    would be the agent's code running as kodo, outside every sandbox)."""
    marker = tmp_path / "PWNED"
    plan = plan_of({"path": "vendor", "change": "add"})
    run_id, outcome = _applied(rt, repo, plan, "", _nested_repo_with_filter(marker), ["vendor"])
    assert outcome == "failed"
    assert _rules(rt, run_id) == ["submodule"]
    assert not marker.exists(), "kodo's git ran a filter driver of the agent's nested repository"
    assert _leftovers(rt.settings.workspace_dir / run_id) == []


def _gitlink_hidden_by_gitmodules(directory: Path) -> None:
    vendor = directory / "vendor"
    vendor.mkdir()
    (vendor / "lib.py").write_text("x = 1\n")
    git_out(vendor, "init", "-q")
    commit_all(vendor, "vendored")
    (directory / ".gitmodules").write_text(
        '[submodule "v"]\n\tpath = vendor\n\turl = ./vendor\n\tignore = all\n'
    )


def test_a_gitmodules_ignore_all_does_not_hide_a_gitlink_from_the_judge(
    rt: Runtime, repo: Path
) -> None:
    """``submodule.<name>.ignore = all`` in an agent-written ``.gitmodules`` makes a plain
    ``git diff --cached`` omit the gitlink: the judge, patch.diff and the commit would
    disagree. The plan names ``.gitmodules`` only; the hidden gitlink must be refused."""
    plan = plan_of({"path": ".gitmodules", "change": "add"})
    run_id, outcome = _applied(
        rt, repo, plan, "", _gitlink_hidden_by_gitmodules, files=[".gitmodules"]
    )
    assert outcome == "failed", "a gitlink the judge never saw was committed"
    assert "submodule" in _rules(rt, run_id)
    assert commits_on_branch(repo, run_id) == 0


def _special_files(directory: Path) -> None:
    os.mkfifo(directory / "conftest.py")
    here = Path.cwd()
    os.chdir(directory)  # a socket's path must be short: bind it by its relative name
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("agent.sock")
    finally:
        os.chdir(here)


def test_a_fifo_or_socket_left_in_the_worktree_fails_closed_and_is_removed(
    rt: Runtime, repo: Path
) -> None:
    """git neither stages nor cleans a FIFO or a socket: a FIFO named ``conftest.py`` would
    stay, unjudged, where the verification command opens it (and blocks)."""
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT, _special_files)
    assert outcome == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "special_file", report["error"]
    assert "conftest.py" in report["error"]
    assert "agent.sock" in report["error"]
    assert commits_on_branch(repo, run_id) == 0
    assert _leftovers(rt.settings.workspace_dir / run_id) == []


def test_a_file_written_after_the_commit_is_never_what_the_verification_runs(
    rt: Runtime, repo: Path
) -> None:
    """A daemon still writing after its answer (or another run's agent: every worktree is in
    the daemon's one writable folder) changes the worktree after kodo judged and committed
    it. ExecuteST must run the judged commit, or refuse naming the rule."""
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT, lambda _d: None)
    assert outcome == "deciding"
    worktree = rt.settings.workspace_dir / run_id
    (worktree / "calc.py").write_text("raise SystemExit(0)  # unjudged\n")
    (worktree / "late.py").write_text("open('ran-late.txt', 'w').write('x')\n")
    hostile(rt).scripts[StepId.DECIDE.value] = {
        "next_action": "verify",
        "argv": ["python3", "late.py"],
        "reason": "runs the change",
    }
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "executing"
    outcome = run_step(rt, StepId.EXECUTE, run_id, execute_step)
    assert not (worktree / "ran-late.txt").exists(), "the verification ran an unjudged file"
    assert outcome == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "worktree_matches_commit"
    assert "calc.py" in report["error"]
    assert "late.py" in report["error"]


def _case_folded_git_folder(directory: Path) -> None:
    (directory / "docs" / ".GIT").mkdir(parents=True)
    (directory / "docs" / ".GIT" / "conftest.py").write_text("import os\n")


def test_a_case_folded_git_folder_git_refuses_to_stage_fails_closed_as_confinement(
    rt: Runtime, repo: Path
) -> None:
    """``git add`` refuses ``docs/.GIT/...`` (invalid path): the step must fail naming the
    rule, not crash, and leave nothing of it on disk."""
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT, _case_folded_git_folder)
    assert outcome == "failed"
    assert _rules(rt, run_id) == ["confinement"]
    assert commits_on_branch(repo, run_id) == 0
    assert _leftovers(rt.settings.workspace_dir / run_id) == []


def _nested_repository_without_a_commit(directory: Path) -> None:
    vendor = directory / "vendor"
    vendor.mkdir()
    (vendor / "x.py").write_text("print('never judged')\n")
    git_out(vendor, "init", "-q")


def test_a_nested_repository_without_a_commit_fails_closed_as_a_submodule(
    rt: Runtime, repo: Path
) -> None:
    """``git add`` refuses such a folder outright ("does not have a commit checked
    out"): named as the rule it stands for, not a bare git error, and undone."""
    run_id, outcome = _applied(
        rt, repo, README_ONLY, README_EDIT, _nested_repository_without_a_commit
    )
    assert outcome == "failed"
    assert _rules(rt, run_id) == ["submodule"]
    assert commits_on_branch(repo, run_id) == 0
    assert _leftovers(rt.settings.workspace_dir / run_id) == []


def test_the_commit_carries_no_word_of_the_agents_and_its_message_runs_nothing(
    rt: Runtime, repo: Path, tmp_path: Path
) -> None:
    """The commit is what kodo delivers: the agent's summary (terminal escapes, "[skip
    ci] Fixes #1", a forged Kodo-Op-Key line ahead of kodo's, which head_trailer read
    first; a red-team pass) stays out of it. The goal goes in, escaped, and the commit
    runs in a sandbox beside a shell (``sh -c``, the commit then its id): the message
    travels on stdin, so none of it is read by that shell."""
    planted = tmp_path / "pwned"
    goal = f"Tidy $(touch {planted}) `touch {planted}`; touch {planted}"
    summary = (
        "Tidy.\x1b[2K\r\x1b]8;;http://evil/\x07x\u202egnp.exe\n\n[skip ci] Fixes #1\n\n"
        "Kodo-Op-Key: forged-by-the-agent"
    )
    model = hostile(rt)
    model.scripts[StepId.COMPILE.value] = README_ONLY
    model.scripts[StepId.APPLY_PATCH.value] = {**patch_of(README_EDIT), "summary": summary}
    run_id = new_run(rt, repo, goal=goal)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)

    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert not planted.exists()
    assert commits_on_branch(repo, run_id) == 1
    message = git_out(repo, "log", "-1", "--format=%B", f"kodo/{run_id}")
    assert message.startswith(f"kodo: {goal[:60]}\n\nKodo-Run: {run_id}\n")
    for word in ("Tidy.", "\x1b", "\u202e", "[skip ci]", "Fixes #1", "forged-by-the-agent"):
        assert word not in message, word
    op_keys = [ln for ln in message.splitlines() if ln.startswith("Kodo-Op-Key: ")]
    assert len(op_keys) == 1


def _slow_to_stage(worktree: Path) -> None:
    """128 MB that zlib cannot shrink: longer to stage than the deadline patched below."""
    with (worktree / "noise.bin").open("wb") as out:
        for _ in range(128):
            out.write(os.urandom(1 << 20))


def test_a_change_git_cannot_judge_in_time_fails_under_git_deadline_and_is_undone(
    rt: Runtime, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git's timeout crashed the step: a failure naming no rule, and the agent's files
    left in the worktree. A slow judgement is the agent's doing: it fails closed."""
    monkeypatch.setattr(git_ops, "GIT_TIMEOUT_S", 0.3)
    run_id, outcome = _applied(rt, repo, README_ONLY, README_EDIT, _slow_to_stage)

    assert outcome == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "git_deadline", report["error"]
    assert "took longer than 0.3s" in report["error"]
    assert commits_on_branch(repo, run_id) == 0
    assert not (rt.settings.workspace_dir / run_id / "noise.bin").exists()
