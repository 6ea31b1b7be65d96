"""The policy read at submit is cached per repository identity and commit; refs never are.

Real git repositories in a temporary folder; each test has a cache of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from shared.domain.pinning import RepoPin
from shared.domain.policy import PolicyError
from shared.service import repo_pin
from shared.service.repo_pin import (
    PolicyCache,
    UnknownBaseRef,
    observe_repo,
    pin_submission,
)

IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", *IDENT, *args], cwd=repo, input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_policy(repo: Path, toml: str | None, message: str) -> str:
    target = repo / ".kodo" / "policy.toml"
    if toml is None:
        target.unlink(missing_ok=True)
    else:
        target.parent.mkdir(exist_ok=True)
        target.write_text(toml)
    (repo / "history.txt").write_text(message)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def pin_of(repo: Path) -> RepoPin:
    found = observe_repo(repo)
    assert found is not None
    return found


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    made = create_sample_repo(tmp_path / "calc")
    commit_policy(made, "[policy]\nmax_lines = 300\n", "a policy")
    return made


def test_a_second_submit_of_the_same_commit_reads_no_policy_file(repo: Path) -> None:
    cache = PolicyCache()
    first = pin_submission(pin_of(repo), "HEAD", None, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1), "trusted ref and base_ref: the same commit"

    again = pin_submission(pin_of(repo), "HEAD", None, cache=cache)

    assert (cache.misses, cache.hits) == (1, 3)
    assert again == first
    assert again.policy.max_lines == 300


def test_the_source_names_the_ref_of_this_submit_even_when_cached(repo: Path) -> None:
    cache = PolicyCache()
    pin_submission(pin_of(repo), "HEAD", None, cache=cache)

    by_branch = pin_submission(pin_of(repo), "main", "refs/heads/main", cache=cache)

    assert cache.misses == 1
    assert "main@" in by_branch.policy.source
    assert "HEAD@" not in by_branch.policy.source


def test_a_new_commit_with_a_changed_policy_is_read_fresh(repo: Path) -> None:
    cache = PolicyCache()
    before = pin_submission(pin_of(repo), "HEAD", None, cache=cache)
    new_head = commit_policy(repo, "[policy]\nmax_lines = 20\nmax_files = 2\n", "stricter")

    after = pin_submission(pin_of(repo), "HEAD", None, cache=cache)

    assert after.base_commit == new_head != before.base_commit
    assert (after.policy.max_lines, after.policy.max_files) == (20, 2)
    assert cache.misses == 2


def test_a_ref_moved_back_is_resolved_again_not_remembered(repo: Path) -> None:
    cache = PolicyCache()
    old = git(repo, "rev-parse", "HEAD")
    commit_policy(repo, "[policy]\nmax_lines = 20\n", "stricter")
    assert pin_submission(pin_of(repo), "HEAD", None, cache=cache).policy.max_lines == 20

    git(repo, "reset", "-q", "--hard", old)
    back = pin_submission(pin_of(repo), "HEAD", None, cache=cache)

    assert back.base_commit == old
    assert back.policy.max_lines == 300


def test_another_repository_at_the_same_path_is_another_key(repo: Path, tmp_path: Path) -> None:
    cache = PolicyCache()
    first = pin_submission(pin_of(repo), "HEAD", None, cache=cache)
    shutil.copytree(repo, tmp_path / "copy", symlinks=True)
    shutil.rmtree(repo)
    (tmp_path / "copy").rename(repo)
    swapped = pin_of(repo)
    assert (swapped.device, swapped.inode) != (first.repo.device, first.repo.inode)

    again = pin_submission(swapped, "HEAD", None, cache=cache)

    assert cache.misses == 2, "a new directory identity is read, not taken from the cache"
    assert again.repo == swapped
    assert again.policy == first.policy


def test_a_malformed_policy_is_refused_on_every_submit_and_never_cached(repo: Path) -> None:
    cache = PolicyCache()
    commit_policy(repo, "[policy]\nmax_lines = 'lots'\n", "broken")

    for _ in range(2):
        with pytest.raises(PolicyError, match=r"\.kodo/policy\.toml at refs/heads/main \("):
            pin_submission(pin_of(repo), "HEAD", None, cache=cache)

    assert len(cache) == 0
    assert cache.misses == 2


def test_replace_objects_cannot_change_what_a_commit_holds(repo: Path) -> None:
    """A ``refs/replace`` ref would show other content under the policy blob's name, and
    could change later: kodo's git ignores it, so the cached answer stays the true one."""
    blob = git(repo, "rev-parse", "HEAD:.kodo/policy.toml")
    weak = git(repo, "hash-object", "-w", "--stdin", stdin="[policy]\nmax_lines = 99999\n")
    git(repo, "replace", blob, weak)
    assert "99999" in git(repo, "show", "HEAD:.kodo/policy.toml"), "plain git honours it"

    pinned = pin_submission(pin_of(repo), "HEAD", None, cache=PolicyCache())

    assert pinned.policy.max_lines == 300


def test_the_cache_keeps_its_bound_dropping_the_least_recently_used(repo: Path) -> None:
    cache = PolicyCache(max_entries=2)
    commit_policy(repo, "[policy]\nmax_lines = 200\n", "second")
    commit_policy(repo, "[policy]\nmax_lines = 100\n", "third")
    pin = pin_of(repo)

    def pin_at(ref: str) -> int:
        """Pin with ``ref`` as base and trusted ref (one key); the misses it cost."""
        misses = cache.misses
        pinned = pin_submission(pin, ref, ref, cache=cache)
        assert pinned.policy.max_lines == {"HEAD~2": 300, "HEAD~1": 200, "HEAD": 100}[ref]
        return cache.misses - misses

    assert [pin_at(ref) for ref in ("HEAD~2", "HEAD~1", "HEAD~2", "HEAD")] == [1, 1, 0, 1]
    assert len(cache) == 2
    assert pin_at("HEAD~1") == 1, "the least recently used entry was dropped"
    assert pin_at("HEAD") == 0


def test_unknown_refs_are_refused_as_before(repo: Path) -> None:
    with pytest.raises(UnknownBaseRef, match="unknown base_ref 'no-such-branch'"):
        pin_submission(pin_of(repo), "no-such-branch", None, cache=PolicyCache())
    with pytest.raises(PolicyError, match="trusted policy ref 'refs/heads/gone' names no commit"):
        pin_submission(pin_of(repo), "HEAD", "refs/heads/gone", cache=PolicyCache())


@pytest.mark.parametrize(
    "ref",
    [
        "HEAD",
        "main",
        "HEAD~1",
        "HEAD^{tree}",  # not a commit
        "v1",  # an annotated tag peels to its commit
        "@{-1}",
        "main@{upstream}",  # makes git die: the batch ends, rev-parse answers alone
        "-h",
        "nope",
        "main\nHEAD",  # never sent as two batch lines
        "ma",
    ],
)
def test_refs_resolve_exactly_as_rev_parse_verify_does(repo: Path, ref: str) -> None:
    git(repo, "tag", "-a", "-m", "t", "v1", "HEAD~1")
    git(repo, "checkout", "-q", "-b", "side")
    git(repo, "checkout", "-q", "main")
    expected = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    pin = pin_of(repo)
    cache = PolicyCache()
    if expected.returncode != 0:
        with pytest.raises(UnknownBaseRef):
            pin_submission(pin, ref, "HEAD", cache=cache)
    else:
        assert pin_submission(pin, ref, "HEAD", cache=cache).base_commit == expected.stdout.strip()


def _git_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every git command the pin runs from here on (each a process), still run for real."""
    calls: list[tuple[str, ...]] = []
    real = repo_pin._Git.__call__

    def recorded(
        self: repo_pin._Git, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        return real(self, *args, stdin=stdin)

    monkeypatch.setattr(repo_pin._Git, "__call__", recorded)
    return calls


def test_a_commit_without_a_kodo_folder_is_read_with_one_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = create_sample_repo(tmp_path / "plain")
    calls = _git_calls(monkeypatch)

    pinned = pin_submission(pin_of(plain), "HEAD", None, cache=PolicyCache())

    assert pinned.policy.source == "default"
    assert [c[0] for c in calls] == ["cat-file", "ls-tree"], calls
    assert calls[1][-1] == ".kodo"


def test_a_policy_is_read_with_its_size_from_the_listing_not_a_cat_file_s(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _git_calls(monkeypatch)

    pinned = pin_submission(pin_of(repo), "HEAD", None, cache=PolicyCache())

    assert pinned.policy.max_lines == 300
    assert [c[:2] for c in calls] == [
        ("cat-file", "--batch-check=%(objectname) %(objecttype)"),
        ("ls-tree", "--long"),
        ("ls-tree", "--long"),
        ("cat-file", "blob"),
    ], calls


def test_a_policy_path_that_is_a_folder_is_refused_by_its_listing(repo: Path) -> None:
    commit_policy(repo, None, "no policy file")
    (repo / ".kodo" / "policy.toml").mkdir()
    (repo / ".kodo" / "policy.toml" / "inner").write_text("[policy]\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a folder named policy.toml")

    with pytest.raises(PolicyError, match=r"is not a regular file \(040000\)"):
        pin_submission(pin_of(repo), "HEAD", None, cache=PolicyCache())
