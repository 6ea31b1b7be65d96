"""A bare delivery target under the roots whose ``commondir`` names a repository outside
them (red-team helper-117 on helper-115's ``_refused_bare``).

``_refused_bare`` checks the target's HEAD, objects, ``.git``, worktrees, entries,
alternates and config, but never ``commondir``: git takes ``<gitdir>/commondir`` as the
folder holding the repository's refs, objects and config for *any* git dir, bare ones
too (``get_common_dir_noenv``). So a target ``deliveries.git`` under the roots holding a
one-line ``commondir`` naming another tenant's ``victim.git`` has receive-pack write the
run's branch (and objects) into ``victim.git``, outside KODO_REPO_ROOTS; and the
alternates check reads ``deliveries.git/objects``, not the store git uses. (The source
repository's ``git_dir_refusal`` refuses a ``commondir``; the target's check does not.)
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


def test_a_bare_target_whose_commondir_names_a_repository_outside_the_roots_gets_nothing(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    target = repo / "deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    (target / "commondir").write_text(f"{victim}\n")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(victim) == [], (
        f"kodo pushed into {victim}, outside KODO_REPO_ROOTS, through {target}/commondir:"
        f" {_branches(victim)}"
    )
    said = _delivery_error(rt, run_id)
    assert "git_dir: " in said or "delivery_target: " in said
