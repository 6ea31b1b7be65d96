"""KODO_REPO_ROOTS bounds the git dir kodo works in, not only the folder a submit names
(red-team helper-104; failed before shared.git_dir).

``resolve_repo`` resolves the submitted path and checks that it lies under a root, then
only asks that ``<repo>/.git`` exists. A repository folder under the roots whose ``.git``
is a symlink to the git dir of a repository elsewhere on the host (one kodo's user can
read and write, but no root admits) passes: kodo pins that repository's commit, checks
its files out for the agent (who reads them, and may quote them in its answers), and
writes into its git dir (``refs/heads/kodo/<run>``, ``worktrees/<run>``, objects), all
outside every allowed root.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security


def test_a_repository_whose_git_dir_lies_outside_the_roots_is_never_worked_on(
    hostile: Hostile,
) -> None:
    """Rule: a submit is refused (or its run fails closed before any agent turn) when the
    repository's git dir is not under KODO_REPO_ROOTS; kodo never writes a ref, a
    worktree record or an object into a repository outside the roots, and never checks
    its files out."""
    victim = hostile.outside_repo("elsewhere", "victim-secret-outside-roots\n")

    decoy = hostile.repos / "decoy"
    decoy.mkdir()
    (decoy / ".git").symlink_to(victim / ".git")  # the folder is under the roots; its git is not
    hostile.give(decoy)

    fixture = hostile.fixture(
        "outside-roots",
        plan=attacks.plan(("README.md", "modify"), design="Tidy the readme."),
    )
    reply = hostile.try_to_plan(decoy, fixture)

    refs = subprocess.run(
        ["git", "-c", "safe.directory=*", "for-each-ref", "--format=%(refname)", "refs/heads/kodo"],
        cwd=victim,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    records = sorted(p.name for p in (victim / ".git" / "worktrees").glob("*"))
    checked_out = hostile.checked_out_secrets()
    assert (refs, records, checked_out) == ([], [], []), (
        f"submit answered {reply.status_code} {reply.text[:300]}; kodo wrote into a "
        f"repository outside KODO_REPO_ROOTS: branches {refs}, worktree records {records},"
        f" its files checked out for the agent at {checked_out}"
    )
    assert reply.status_code == 400, reply.text  # refused at submit, naming the rule
    assert "git_dir" in reply.text
