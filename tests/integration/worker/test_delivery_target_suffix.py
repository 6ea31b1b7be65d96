"""A delivery target git does not open where kodo judged it (red-team helper-117 on
``_refused_bare``).

``_refused_bare`` judges the URL's folder P: a ``HEAD`` that is a file, an ``objects``
folder, no ``.git``, and so on. But git's local receive-pack opens the repository with
``enter_repo(P, strict=0)``, which tries ``P/.git``, ``P``, ``P.git/.git`` and ``P.git`` in
turn and takes ``P`` only if ``is_git_directory`` holds (a valid HEAD *and* a ``refs``
folder). A P with a HEAD file that is no ref (or no ``refs`` folder) passes every kodo
check, and git goes on to the sibling ``P.git/.git``: a ``gitdir:`` file there (never
looked at) names a repository outside KODO_REPO_ROOTS, and the run's branch is pushed
into it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.delivery import deliver
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.owned_repos import branches as _branches
from tests.integration.worker.owned_repos import delivery_error as _delivery_error
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


def test_a_target_git_does_not_open_sends_nothing_to_its_dot_git_sibling(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    target = repo / "deliveries"  # what kodo judges: a bare-looking folder
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    (target / "HEAD").write_text("not a ref\n")  # still a file: every kodo check passes
    sibling = repo / "deliveries.git"  # what git opens: P.git/.git, a gitdir file
    sibling.mkdir()
    (sibling / ".git").write_text(f"gitdir: {victim}\n")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(victim) == [], (
        f"kodo judged {target} and git pushed into {victim}, outside KODO_REPO_ROOTS,"
        f" through {sibling}/.git: {_branches(victim)}"
    )
    said = _delivery_error(rt, run_id)
    assert "git_dir: " in said or "delivery_target: " in said
