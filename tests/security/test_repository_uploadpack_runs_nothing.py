"""A repository's ``remote.<name>.uploadpack`` never runs: kodo's blanking of it does not
win (red-team helper-111).

shared.gitcmd blanks every command-valued key the repository's config sets by setting it
again, empty, at command scope, "the highest precedence". git's remote.c keeps the
*first* ``uploadpack`` it reads and only says "more than one uploadpack given, using the
first": the repository's own value (read before the command scope) wins. git runs it
with a shell whenever it fetches, and kodo's git fetches by itself in a partial clone
(``extensions.partialClone`` names a promisor remote, ``protocol.file.allow=always`` lets
a local URL through): any git of kodo's meeting a missing object (the API's pin of the
base commit at submit, unsandboxed) runs the owner's shell command as kodo's user.
"""

from __future__ import annotations

import time

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, git

pytestmark = pytest.mark.security


def test_a_repository_s_uploadpack_never_runs_as_kodo(hostile: Hostile) -> None:
    """Rule: git never runs a repository's code outside a sandbox. A submit on a partial
    clone whose promisor remote names an ``uploadpack`` command is refused (or at least
    nothing of it runs): the marker it would write never appears."""
    marker = hostile.markers / "uploadpack-ran"
    repo = hostile.repo("uploadpack")
    missing = "1" * 40  # a commit the repository does not hold: git fetches it lazily
    git(repo, "config", "core.repositoryformatversion", "1")
    git(repo, "config", "extensions.partialClone", "origin")
    git(repo, "config", "remote.origin.url", str(hostile.outside))  # any folder
    git(repo, "config", "remote.origin.promisor", "true")
    git(repo, "config", "remote.origin.uploadpack", f"id -un > {marker}; false")
    (repo / ".git" / "refs" / "heads" / "lazy").write_text(f"{missing}\n")
    hostile.give(repo)

    fixture = hostile.fixture(
        "uploadpack-runs", plan=attacks.plan(("README.md", "modify"), design="Tidy it.")
    )
    goal = f"Tidy the project a little [oc:fixture={fixture}]"
    reply = hostile.http.post(
        "/intents",
        json={"repo": str(repo), "goal": goal, "base_ref": "lazy"},
        headers=hostile.as_(hostile.submitter),
    )
    time.sleep(0.5)

    assert not marker.exists(), (
        f"submit answered {reply.status_code} {reply.text[:200]}; the repository's"
        f" remote.origin.uploadpack ran outside any sandbox as {marker.read_text().strip()!r}"
    )
