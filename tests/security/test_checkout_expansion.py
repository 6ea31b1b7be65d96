"""A base tree under the checkout bound expands ~47x as git writes it (red-team helper-117
on helper-116's ``checkout_refusal``).

``checkout_refusal`` weighs a tree by its blobs' sizes (``git ls-tree -r -l``). But git
writes a file through the commit's own ``.gitattributes``: ``ident`` turns each 4-byte
``$Id$`` into the 47-byte ``$Id: <blob id> $``, and ``working-tree-encoding=UTF-32``
then writes every one of those ASCII bytes as four. A 2 MiB blob of ``$Id$`` (stored in
a few kB of objects, 1/32 of the stack's 64 MiB bound) is written as ~94 MiB to the
run's worktree by ``checkout_head`` (``read-tree -u``, no faithfulness check), and again
to the verification's private checkout (``git checkout``) before
``unfaithful_checkout`` looks at it. Each expanding attribute is judged only after the
bytes are on the host's disk.

The safe outcome: no checkout writes more than KODO_EXEC_WORKTREE_BYTES; a tree whose
attributes convert content (ident, working-tree-encoding, eol, a filter) is weighed as
written, or refused before a byte is checked out, naming the rule.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import WORKTREE_BYTES, Hostile, assert_fails_closed
from tests.security.test_base_checkout_bounds import _commit_tree_with, _objects_bytes

pytestmark = pytest.mark.security

README = FILES["README.md"]
IDENTS = 1 << 19  # 2 MiB of "$Id$": ~94 MiB once written
ATTRIBUTES = "bomb.txt ident working-tree-encoding=UTF-32\n"
RULES = ("max_checkout_bytes", "max_checkout_files", "exec_worktree_bytes", "worktree_filter")


def _blob(repo: Path, data: bytes) -> str:
    return (
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "hash-object", "-w", "--stdin"],
            input=data,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )


def test_a_base_tree_whose_attributes_expand_it_is_not_written_past_the_bound(
    hostile: Hostile,
) -> None:
    repo = hostile.repo("ident-bomb")
    attributes = _blob(repo, ATTRIBUTES.encode())
    bomb = _blob(repo, b"$Id$" * IDENTS)
    _commit_tree_with(
        repo,
        [f"100644 blob {attributes}\t.gitattributes", f"100644 blob {bomb}\tbomb.txt"],
        "keyword expansion for the release notes",
    )
    stored = _objects_bytes(repo)
    fixture = hostile.fixture(
        "ident-bomb",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
        build=attacks.build(
            "python3", "-c", "import os; print('CHECKED-OUT', os.path.getsize('bomb.txt'))"
        ),
    )
    outcome = hostile.drive(repo, fixture, deadline_s=180)
    worktree = hostile.workspaces / outcome.run_id / "bomb.txt"
    written = worktree.stat().st_size if worktree.exists() else 0
    measured = (
        f"the tree lists {4 * IDENTS} bytes for bomb.txt (objects: {stored} bytes); kodo wrote"
        f" {written} bytes of it into the run's worktree (the bound is {WORKTREE_BYTES})"
    )
    assert written <= WORKTREE_BYTES, measured + "\n" + outcome.describe()
    assert_fails_closed(outcome, *RULES)
