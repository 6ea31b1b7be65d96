"""What runs leave in a repository is packed, as git's own ``gc --auto`` would: real runs
on real git and Postgres, the repository cleaned by the reconciler's cleanup.

git's ``gc --auto`` estimates the loose objects from one fan-out folder (``objects/17``)
and packs once it holds more than ``gc.auto / 256``: each spec sets ``gc.auto=256`` and
writes three blobs whose ids start with ``17`` (unreachable, so they also stand for what a
run's ``git add`` wrote and has not committed yet).
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.worker import repo_upkeep
from services.worker.delivery import clean
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.test_delivery import succeeded

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh_checks() -> Iterator[None]:
    repo_upkeep.forget_checks()
    yield
    repo_upkeep.forget_checks()


def git_out(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def counted(repo: Path) -> dict[str, int]:
    """``git count-objects -v`` as numbers: ``count`` loose, ``in-pack`` packed."""
    lines = git_out(repo, "count-objects", "-v").splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def loose_blobs_in_17(repo: Path, how_many: int = 3) -> list[str]:
    """Write ``how_many`` unreachable blobs whose ids start with ``17``; their ids."""
    ids = []
    for n in itertools.count():
        body = f"staged by a run, not committed yet {n}\n".encode()
        object_id = hashlib.sha1(b"blob %d\0" % len(body) + body, usedforsecurity=False)
        if object_id.hexdigest().startswith("17"):  # git's object id of the blob
            done = subprocess.run(
                ["git", "hash-object", "-w", "--stdin"],
                cwd=repo,
                input=body,
                capture_output=True,
                check=True,
            )
            ids.append(done.stdout.decode().strip())
            if len(ids) == how_many:
                return ids
    raise AssertionError("unreachable")


def test_a_cleanup_packs_what_the_runs_wrote_once_git_would_and_keeps_young_strays(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """The run's commit and branch end up packed; unreachable objects younger than two
    weeks stay, even where the repository asks gc to prune at once."""
    rt = make_rt(worktree_grace_s=0)
    run_id = succeeded(rt, repo)
    commit = git_out(repo, "rev-parse", f"kodo/{run_id}")
    git_out(repo, "config", "gc.auto", "256")
    git_out(repo, "config", "gc.pruneExpire", "now")
    strays = loose_blobs_in_17(repo)
    before = counted(repo)
    assert before["in-pack"] == 0
    assert before["count"] > len(strays)

    assert clean(rt) == [run_id]

    after = counted(repo)
    assert after["in-pack"] > 0, "the reachable objects were packed"
    assert after["count"] == len(strays), "only the young unreachable ones stay loose"
    for blob in strays:
        assert git_out(repo, "cat-file", "-t", blob) == "blob"
    assert git_out(repo, "cat-file", "-t", commit) == "commit"
    packed = (repo / ".git" / "packed-refs").read_text()
    assert f"{commit} refs/heads/kodo/{run_id}" in packed, "the run's branch was packed too"


def test_a_repository_that_turns_gc_off_is_left_as_it_is(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(worktree_grace_s=0)
    run_id = succeeded(rt, repo)
    git_out(repo, "config", "gc.auto", "0")
    loose_blobs_in_17(repo)
    before = counted(repo)

    assert clean(rt) == [run_id]

    assert counted(repo) == before
    assert not (repo / ".git" / "packed-refs").exists()


def test_a_repository_is_checked_at_most_once_a_while_by_one_process(repo: Path) -> None:
    now = 1000.0
    assert repo_upkeep.upkeep([str(repo), str(repo)], clock=lambda: now) == [str(repo)]
    assert repo_upkeep.upkeep([str(repo)], clock=lambda: now + 1) == []
    later = now + repo_upkeep.EVERY_S
    assert repo_upkeep.upkeep([str(repo)], clock=lambda: later) == [str(repo)]


def test_a_gc_cut_by_its_timeout_or_a_repository_gone_fails_nothing_else(
    repo: Path, tmp_path: Path
) -> None:
    """Logged, never raised: the cleanup that asked has already recorded its runs."""
    git_out(repo, "config", "gc.auto", "256")
    loose_blobs_in_17(repo)
    gone = str(tmp_path / "moved-away")
    checked = repo_upkeep.upkeep([str(repo), gone], timeout_s=0.001)
    assert checked == sorted([str(repo), gone])
    assert counted(repo)["in-pack"] == 0, "the cut gc packed nothing"
