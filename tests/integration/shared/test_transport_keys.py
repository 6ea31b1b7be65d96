"""kodo's git allows no transport at all (red-team helper-114 on helper-111's fix).

HARDENED pins ``protocol.allow=never`` and ``protocol.file.allow=never``, but git's
transport.c reads ``protocol.<name>.allow`` first and only then ``protocol.allow``: a
repository's own ``protocol.ext.allow = always`` (or ssh, http...) is not overridden by
kodo's command-scope ``protocol.allow``. And promisor-remote.c makes a remote a promisor
for ``remote.<name>.partialCloneFilter`` alone, which _LAZY_FETCH_KEYS (``promisor`` and
``extensions.partialClone`` only) never names. Together: a hardened ``cat-file`` of an
object the repository lacks fetches it lazily through ``ext::sh -c ...``, running the
repository's command as kodo. ``GIT_NO_LAZY_FETCH`` stops it only on gits that know it
(2.39.4+, 2.44+); the specs below take it away to stand for one that does not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import shared.gitcmd
from shared.gitcmd import LazyFetchConfig, run_git


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def _repo_missing_a_blob(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "f").write_text("x")
    _git(repo, "add", "f")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "one")
    blob = _git(repo, "rev-parse", "HEAD:f")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    return repo, blob


def test_partial_clone_filter_alone_is_refused_as_a_partial_clone(tmp_path: Path) -> None:
    """Rule git_dir: ``remote.<name>.partialCloneFilter`` makes git fetch lazily as
    ``remote.<name>.promisor`` does; kodo refuses it by name too."""
    repo, blob = _repo_missing_a_blob(tmp_path)
    _git(repo, "config", "remote.origin.url", str(tmp_path))
    _git(repo, "config", "remote.origin.partialCloneFilter", "blob:none")
    with pytest.raises(LazyFetchConfig, match=r"^git_dir: "):
        run_git(repo, ["cat-file", "-p", blob], timeout_s=30)


def test_a_repository_s_own_protocol_allow_opens_no_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: git never runs a repository's code. With no GIT_NO_LAZY_FETCH (a git that
    predates it), the repository's own ``protocol.ext.allow`` must still not open
    ``ext::``: a fetch (what a lazy fetch is) is refused before the command starts."""
    monkeypatch.delitem(shared.gitcmd.ENV, "GIT_NO_LAZY_FETCH")
    shared.gitcmd._LISTINGS.clear()
    marker = tmp_path / "ext-ran"
    repo, _ = _repo_missing_a_blob(tmp_path)
    _git(repo, "config", "remote.origin.url", f"ext::sh -c id% -un% >% {marker}")
    _git(repo, "config", "protocol.ext.allow", "always")

    done = run_git(repo, ["fetch", "-q", "origin"], timeout_s=30)

    assert done.returncode != 0
    assert b"transport 'ext' not allowed" in done.stderr, done.stderr
    assert not marker.exists(), f"the repository's ext:: URL ran as {marker.read_text()!r}"
