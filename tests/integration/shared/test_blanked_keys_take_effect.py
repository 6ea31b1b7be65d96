"""A command key kodo blanks must be blank to git, not merely listed (red-team helper-111).

shared.gitcmd blanks each command-valued key of the repository's config by setting it
again, empty, at command scope (GIT_CONFIG_COUNT). For most keys git keeps the last value
read, and command scope is read last. git's remote.c keeps the *first*
``remote.<name>.uploadpack`` (and ``receivepack``) it reads ("more than one uploadpack
given, using the first"): the repository's own value wins, and git runs it through a
shell on any fetch. In a partial clone (``extensions.partialClone``) any git that meets
a missing object fetches it by itself from the promisor remote, and kodo's
``protocol.file.allow=always`` had let a local URL through. Now no transport is allowed
at all, and a repository configured to fetch lazily is refused by name (rule git_dir).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared.gitcmd import LazyFetchConfig, run_git


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _partial_clone(repo: Path, url: Path) -> None:
    _git(repo.parent, "init", "-q", "-b", "main", str(repo))
    _git(repo, "config", "core.repositoryformatversion", "1")
    _git(repo, "config", "extensions.partialClone", "origin")
    _git(repo, "config", "remote.origin.url", str(url))
    _git(repo, "config", "remote.origin.promisor", "true")


def test_a_repository_s_uploadpack_never_runs(tmp_path: Path) -> None:
    """Rule: git never runs a repository's code. A hardened ``rev-parse`` of a commit the
    repository lacks must not run the repository's ``remote.origin.uploadpack``."""
    marker = tmp_path / "uploadpack-ran"
    repo = tmp_path / "repo"
    _partial_clone(repo, tmp_path)  # any folder: git runs the command before it looks
    _git(repo, "config", "remote.origin.uploadpack", f"id -un > {marker}; false")

    with pytest.raises(LazyFetchConfig, match=r"^git_dir: .* \(a partial clone\)"):
        run_git(repo, ["rev-parse", "--verify", "--quiet", "1" * 40 + "^{commit}"], timeout_s=30)

    assert not marker.exists(), (
        f"hardened git ran the repository's remote.origin.uploadpack as {marker.read_text()!r}"
    )


def test_hardened_git_never_fetches_from_a_promisor_remote(tmp_path: Path) -> None:
    """Rule git_dir (KODO_REPO_ROOTS bounds what kodo reads): a hardened git meeting an
    object the repository lacks fails; it never fetches it from another repository."""
    elsewhere = tmp_path / "elsewhere"
    _git(tmp_path, "init", "-q", "-b", "main", str(elsewhere))
    (elsewhere / "SECRET.txt").write_text("elsewhere-secret\n")
    _git(elsewhere, "add", "SECRET.txt")
    _git(elsewhere, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "s")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=elsewhere, capture_output=True, text=True, check=True
    ).stdout.strip()
    repo = tmp_path / "repo"
    _partial_clone(repo, elsewhere / ".git")

    with pytest.raises(LazyFetchConfig):
        run_git(repo, ["cat-file", "-p", f"{head}:SECRET.txt"], timeout_s=30)

    packs = sorted(p.name for p in (repo / ".git" / "objects" / "pack").glob("*.pack"))
    assert packs == [], f"hardened git fetched from {elsewhere} (packs {packs})"


def test_hardened_git_reaches_no_other_repository_by_any_transport(tmp_path: Path) -> None:
    """Beneath the refusal: no protocol is allowed, ``file`` included, so a fetch (the
    one way a promisor or an uploadpack could run) never starts."""
    elsewhere = tmp_path / "elsewhere"
    _git(tmp_path, "init", "-q", "-b", "main", str(elsewhere))
    _git(
        elsewhere,
        "-c",
        "user.name=a",
        "-c",
        "user.email=a@b",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "s",
    )
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", "-b", "main", str(repo))

    for url in (str(elsewhere), f"file://{elsewhere}"):
        done = run_git(repo, ["fetch", "-q", url, "main"], timeout_s=30)
        assert done.returncode != 0
        assert b"transport 'file' not allowed" in done.stderr, done.stderr
    assert not list((repo / ".git" / "objects" / "pack").glob("*.pack"))
