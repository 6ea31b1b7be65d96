"""A repository's ``.git/worktrees`` that is a link out of its git dir never makes kodo
write or delete there (red-team helper-104; each failed before shared.git_dir).

kodo finds a run's registration at ``resolved(<repo>/.git/worktrees) / <run>``, and after
a cleanup runs ``git gc --auto`` in the repository (unsandboxed, as the worker) under
the repository's own ``gc.*`` settings. A hostile repository whose ``.git/worktrees`` is
a symlink to any folder kodo's user can write (another run's worktree folder, kodo's
state, another tenant's repository) gets kodo's records written into that folder during
the run, and then ``git worktree prune`` (which every ``gc`` that packs runs) deletes
every entry of it that is not a locked worktree record: a file is "not a valid
directory", a folder has "no gitdir file". git follows the link; kodo does not refuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker import repo_upkeep
from services.worker.delivery import clean
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import RuntimeFactory, new_run
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import listing as _listing
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


def _victim(tmp_path: Path) -> Path:
    """A folder kodo's user may write that no repository owns: here it stands for another
    run's worktree folder, kodo's state or another tenant's repository."""
    victim = tmp_path / "victim"
    (victim / "another-run").mkdir(parents=True)
    (victim / "another-run" / "work.py").write_text("print('precious')\n")
    (victim / "token").write_text("kodo_secret_token\n")
    return victim


def test_a_worktrees_link_out_of_the_git_dir_gets_no_record_written_there(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule: kodo writes worktree records only inside the repository's own git dir; a
    ``.git/worktrees`` that is a link leading elsewhere fails the run closed, naming it
    (today: the records are written through the link, then the pinned checkout crashes
    the step with "not a git repository", and the record is left there for good)."""
    victim = _victim(tmp_path)
    before = _listing(victim)
    (repo / ".git" / "worktrees").symlink_to(victim)

    rt = make_rt()
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    outcome = run_step(rt, StepId.COMPILE, run_id, compile_step)

    assert _listing(victim) == before, (
        f"CompileST ({outcome}) wrote kodo's records through .git/worktrees into"
        f" {victim}: {_listing(victim)}"
    )
    assert outcome == "failed"
    with rt.sessions() as s:
        error = s.execute(text("SELECT error FROM app.runs WHERE id = :r"), {"r": run_id})
        assert "git_dir: " in (error.scalar_one() or "")


def test_a_cleanup_never_prunes_through_a_worktrees_link(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule: removing a run's records (and the ``git gc --auto`` kodo runs in the
    repository after a cleanup) deletes nothing outside the repository's git dir. The
    repository's owner, whose folder it is, swaps ``.git/worktrees`` for a link once the
    run has its worktree; the cleanup finds no record of kodo's there, runs ``git
    worktree prune``, and git deletes every entry of the linked folder (a file is "not a
    valid directory", a folder has "no gitdir file"), as the worker's user."""
    victim = _victim(tmp_path)
    before = _listing(victim)
    rt = make_rt(worktree_grace_s=0)
    repo_upkeep.forget_checks()
    run_id = _succeeded(rt, repo)

    records = repo / ".git" / "worktrees"
    records.rename(repo / ".git" / "worktrees.moved")  # the owner's own repository
    records.symlink_to(victim)
    cleaned = clean(rt)

    assert _listing(victim) == before, (
        f"the cleanup of {cleaned} (run {run_id}) deleted through .git/worktrees:"
        f" {before} became {_listing(victim)}"
    )


def test_the_gc_after_a_cleanup_never_prunes_through_a_worktrees_link(
    repo: Path, tmp_path: Path
) -> None:
    """Rule: the ``git gc --auto`` kodo runs in a repository after a cleanup
    (``repo_upkeep.pack_if_due``, under the repository's own ``gc.auto`` and
    ``gc.autoPackLimit``) deletes nothing outside the repository's git dir. gc's
    ``git worktree prune`` follows a ``.git/worktrees`` link and removes every entry there
    that is not a locked, valid record, whatever ``gc.worktreePruneExpire`` says."""
    victim = _victim(tmp_path)
    before = _listing(victim)
    (repo / ".git" / "worktrees").symlink_to(victim)
    _git(repo, "config", "gc.autoPackLimit", "1")
    for n in range(2):  # two packs: past gc.autoPackLimit, so `gc --auto` packs
        (repo / f"pad{n}.txt").write_text(f"pad {n}\n")
        _git(repo, "add", f"pad{n}.txt")
        _git(repo, "commit", "-q", "-m", f"pad {n}")
        _git(repo, "repack", "-q")

    try:
        said = repo_upkeep.pack_if_due(repo)
    except RuntimeError as exc:  # refusing the repository is a fix
        said = str(exc)

    assert _listing(victim) == before, (
        f"gc --auto in the repository ({said!r}) deleted through .git/worktrees:"
        f" {before} became {_listing(victim)}"
    )
