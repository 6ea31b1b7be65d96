"""kodo's git never fetches: a repository's promisor remote must not make it read a
repository outside KODO_REPO_ROOTS (red-team helper-111).

shared.gitcmd sets ``protocol.allow=never`` but ``protocol.file.allow=always`` on every
call (for the delivery push). A repository whose config says
``extensions.partialClone=origin`` with ``remote.origin.promisor=true`` and a local
``remote.origin.url`` (any folder on the host kodo's user can read) has every kodo git
that meets a missing object lazily ``git fetch`` it from there: the API's pin at submit
(unsandboxed, as the API's user), the worker's checkout. The owner points a branch at a
commit only the other repository holds; kodo fetches it (and its files) into the
owner's repository, where the owner reads it, and checks it out for the agent.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, git

pytestmark = pytest.mark.security


def test_a_promisor_remote_outside_the_roots_is_never_fetched_from(hostile: Hostile) -> None:
    """Rule git_dir: a repository whose config makes git fetch missing objects lazily (a
    partial clone's promisor remote) from outside KODO_REPO_ROOTS is refused at submit
    (400, naming the rule), and nothing of the other repository reaches the owner's
    repository or a worktree."""
    victim = hostile.outside_repo("elsewhere-promisor", "victim-secret-via-promisor\n")
    stolen = git(victim, "rev-parse", "HEAD").strip()

    fetcher = hostile.repos / "fetcher"  # a real repository under the roots
    fetcher.mkdir()
    git(fetcher, "init", "-q", "-b", "main")
    git(fetcher, "config", "core.repositoryformatversion", "1")
    git(fetcher, "config", "extensions.partialClone", "origin")
    git(fetcher, "config", "remote.origin.url", str(victim / ".git"))
    git(fetcher, "config", "remote.origin.promisor", "true")
    (fetcher / ".git" / "refs" / "heads" / "main").write_text(f"{stolen}\n")  # not held here
    hostile.give(fetcher)

    fixture = hostile.fixture(
        "promisor-outside-roots",
        plan=attacks.plan(("README.md", "modify"), design="Tidy the readme."),
    )
    reply = hostile.try_to_plan(fetcher, fixture)

    fetched = sorted(p.name for p in (fetcher / ".git" / "objects" / "pack").glob("*.pack"))
    checked_out = hostile.checked_out_secrets()
    assert (fetched, checked_out) == ([], []), (
        f"submit answered {reply.status_code} {reply.text[:200]}; kodo's git fetched from a"
        f" repository outside KODO_REPO_ROOTS into the owner's: packs {fetched}, its files"
        f" checked out for the agent at {checked_out}"
    )
    assert reply.status_code == 400, reply.text
    assert "git_dir" in reply.text
