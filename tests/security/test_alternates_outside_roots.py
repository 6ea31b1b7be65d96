"""KODO_REPO_ROOTS bounds the objects kodo reads, not only the git dir it writes into
(red-team helper-111).

shared.git_dir refuses a ``.git`` that is a link, a ``commondir`` and any link inside the
git dir, but a plain file ``.git/objects/info/alternates`` naming another repository's
object store (anywhere on the host: one kodo's user can read, but no root admits) is
accepted at submit, and git_ops.git_root even binds that store into the pinned git's
sandbox. The owner points a branch at a commit that exists only in the other store: kodo
pins it, checks its files out for the agent, shows them in the plan/patch context and
delivers them (a push borrows the repository's objects, alternates of alternates too).
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, git

pytestmark = pytest.mark.security


def test_a_repository_borrowing_objects_from_outside_the_roots_is_never_worked_on(
    hostile: Hostile,
) -> None:
    """Rule git_dir: a submit whose repository's ``objects/info/alternates`` names an
    object store outside KODO_REPO_ROOTS is refused (400, naming the rule); kodo never
    checks out a commit that only that store holds."""
    victim = hostile.outside_repo("elsewhere-alt", "victim-secret-via-alternates\n")
    stolen = git(victim, "rev-parse", "HEAD").strip()

    borrower = hostile.repos / "borrower"  # a real repository under the roots
    borrower.mkdir()
    git(borrower, "init", "-q", "-b", "main")
    info = borrower / ".git" / "objects" / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "alternates").write_text(f"{victim / '.git' / 'objects'}\n")
    git(borrower, "update-ref", "refs/heads/main", stolen)  # an object it does not hold
    hostile.give(borrower)

    fixture = hostile.fixture(
        "alternates-outside-roots",
        plan=attacks.plan(("README.md", "modify"), design="Tidy the readme."),
    )
    reply = hostile.try_to_plan(borrower, fixture)

    checked_out = hostile.checked_out_secrets()
    assert checked_out == [], (
        f"submit answered {reply.status_code} {reply.text[:200]}; kodo checked out, for the"
        f" agent, files held only by an object store outside KODO_REPO_ROOTS: {checked_out}"
    )
    assert reply.status_code == 400, reply.text  # refused at submit, naming the rule
    assert "git_dir" in reply.text
