"""A hostile repository's base commit is checked out with no bound but git's timeout.

Every byte an agent's patch adds is bounded (max_file_bytes, max_patch_bytes,
max_files), and a verification command writes into an overlay bounded by
KODO_EXEC_WORKTREE_BYTES; but the base commit kodo checks out itself is not: the run's
worktree (``_check_out_into_place`` -> ``checkout_head``: ``git read-tree -u``) and the
verification's private checkout (``private_checkout``: ``git checkout <commit> -- .``)
write every blob of the tree to the host's disk, bounded only by GIT_TIMEOUT_S
(60 s of disk writes: tens of GB). Zeros compress about 1000:1, so a repository of a
few MB holds a tree of many GB; a tree of a few MB holds millions of empty files.

(red-team helper-116.) Small sizes here prove the missing bound by measurement: a
96 MB blob stored in 96 kB of objects (1.5x the worktree bound the stack sets), and
40,000 empty files in 100 kB of objects (more than twice the 16,384 files a
verification's worktree bound admits), each written twice to the host's disk; an agent's
change of 5 x 15 MB zeros (under every per-file rule) that kodo checks out past the same
bound; and git's stderr for a base tree it cannot check out, held and logged whole by the
worker. The safe outcome: the tree's size (``git ls-tree -r -l``, never a blob read) and
entry count are judged before a byte is checked out, a run past them fails closed naming
the rule, and what git says is read to a bound.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import WORKTREE_BYTES, Hostile, assert_fails_closed, git

pytestmark = pytest.mark.security

README = FILES["README.md"]
MB = 1024 * 1024
BOMB = WORKTREE_BYTES * 3 // 2  # 96 MB with the stack's 64 MB worktree bound
EMPTY_FILES = 40_000  # the overlay's bound admits WORKTREE_BYTES // 4096 = 16,384
BOUND_RULES = ("max_checkout_bytes", "max_checkout_files", "exec_worktree_bytes")


def _commit_tree_with(repo: Path, entries: list[str], message: str) -> None:
    """Commit HEAD's tree plus ``entries`` (``mktree`` lines), without writing a file to
    the repository's own working copy (only its objects grow)."""
    listing = git(repo, "ls-tree", "HEAD")
    tree = (
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "mktree"],
            input=(listing + "".join(e + "\n" for e in entries)).encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    head = git(repo, "rev-parse", "HEAD").strip()
    commit = git(repo, "commit-tree", tree, "-p", head, "-m", message).strip()
    git(repo, "update-ref", "refs/heads/main", commit)
    git(repo, "read-tree", "HEAD")  # the working copy's index: kodo reads objects only


def _objects_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".git" / "objects").rglob("*") if p.is_file())


def _zero_blob(repo: Path, size: int) -> str:
    """A blob of ``size`` zeros, written as one loose object streamed from a pipe."""
    with subprocess.Popen(
        ["git", "-c", "safe.directory=*", "-C", str(repo), "hash-object", "-w", "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        chunk = b"\0" * MB
        for _ in range(size // MB):
            proc.stdin.write(chunk)
        proc.stdin.close()
        oid = proc.stdout.read().decode().strip()
    assert proc.returncode == 0
    return oid


def test_a_base_blob_that_is_a_zlib_bomb_is_refused_before_it_is_checked_out(
    hostile: Hostile,
) -> None:
    repo = hostile.repo("zlib-bomb")
    oid = _zero_blob(repo, BOMB)
    _commit_tree_with(repo, [f"100644 blob {oid}\tbomb.bin"], "a large data file")
    stored = _objects_bytes(repo)
    fixture = hostile.fixture(
        "zlib-bomb",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
        # the verification reports what kodo wrote to its private checkout
        build=attacks.build(
            "python3", "-c", "import os; print('CHECKED-OUT', os.path.getsize('bomb.bin'))"
        ),
    )
    outcome = hostile.drive(repo, fixture, deadline_s=120)
    output = outcome.command_output()
    worktree = hostile.workspaces / outcome.run_id / "bomb.bin"
    written = worktree.stat().st_size if worktree.exists() else 0
    measured = (
        f"the repository's objects hold {stored} bytes; kodo checked out {written} bytes into"
        f" the run's worktree and the verification saw {output.strip()!r} in its private"
        f" checkout (the worktree bound is {WORKTREE_BYTES})"
    )
    assert f"CHECKED-OUT {BOMB}" not in output, measured + "\n" + outcome.describe()
    assert written <= WORKTREE_BYTES, measured
    assert_fails_closed(outcome, *BOUND_RULES)


def _empty_folders(repo: Path, files: int, per_folder: int = 1000) -> list[str]:
    """``files`` empty files in folders of ``per_folder``: mktree lines for the folders."""
    empty = (
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "hash-object", "-w", "--stdin"],
            input=b"",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    entries = []
    for folder in range(files // per_folder):
        body = "".join(f"100644 blob {empty}\tf{folder:03d}_{i:05d}\n" for i in range(per_folder))
        sub = (
            subprocess.run(
                ["git", "-c", "safe.directory=*", "-C", str(repo), "mktree"],
                input=body.encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        entries.append(f"040000 tree {sub}\tmany{folder:03d}")
    return entries


def test_a_base_tree_of_tens_of_thousands_of_files_is_refused_before_it_is_checked_out(
    hostile: Hostile,
) -> None:
    repo = hostile.repo("many-files")
    _commit_tree_with(repo, _empty_folders(repo, EMPTY_FILES), "vendored fixtures")
    stored = _objects_bytes(repo)
    fixture = hostile.fixture(
        "many-files",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
        build=attacks.build(
            "python3",
            "-c",
            "import os; print('CHECKED-OUT', sum(len(f) for _, _, f in os.walk('.')))",
        ),
    )
    outcome = hostile.drive(repo, fixture, deadline_s=180)
    output = outcome.command_output()
    worktree = hostile.workspaces / outcome.run_id
    written = sum(len(os.listdir(p)) for p in worktree.glob("many*")) if worktree.exists() else 0
    measured = (
        f"the repository's objects hold {stored} bytes; kodo made {written} files in the"
        f" run's worktree and the verification counted {output.strip()!r} in its private"
        f" checkout (a verification's worktree bound admits {WORKTREE_BYTES // 4096})"
    )
    assert written <= WORKTREE_BYTES // 4096, measured + "\n" + outcome.describe()
    assert_fails_closed(outcome, *BOUND_RULES)


AGENT_FILES = 5
AGENT_FILE = 15 * MB  # under max_file_bytes (16 MiB): 75 MB in all, past the 64 MB bound


def _zero_files_as_patch(tmp_path: Path, count: int, size: int) -> str:
    """A diff adding ``count`` files of ``size`` zeros as git's compressed binary literals
    (some 15 kB each), made from blobs streamed into a scratch repository: no file of it
    is written out."""
    scratch = tmp_path / "gen-zeros"
    scratch.mkdir()
    subprocess.run(["git", "init", "-q", str(scratch)], check=True)
    oid = _zero_blob(scratch, size)
    for i in range(count):
        subprocess.run(
            [
                "git",
                "-C",
                str(scratch),
                "update-index",
                "--add",
                "--cacheinfo",
                f"100644,{oid},data/zeros{i}.bin",
            ],
            check=True,
        )
    shown = subprocess.run(
        ["git", "-C", str(scratch), "diff", "--cached", "--binary", "--full-index"],
        check=True,
        capture_output=True,
    )
    return shown.stdout.decode()


def test_an_agents_change_under_every_file_rule_cannot_check_out_past_the_worktree_bound(
    hostile: Hostile, tmp_path: Path
) -> None:
    """Each file is under max_file_bytes, the patch (75 kB) under max_patch_bytes and the
    count under max_files: with the defaults, one round may add 50 x 16 MiB = 800 MiB,
    which kodo itself writes to the host's disk in the verification's private checkout
    (outside the overlay that bounds what the command writes), every round."""
    paths = [(f"data/zeros{i}.bin", "add") for i in range(AGENT_FILES)]
    diff = _zero_files_as_patch(tmp_path, AGENT_FILES, AGENT_FILE)
    fixture = hostile.fixture(
        "zero-files",
        plan=attacks.plan(*paths, design="Add fixture data files."),
        patch=attacks.patch(diff),
        build=attacks.build(
            "python3",
            "-c",
            "import os; print('CHECKED-OUT', sum(os.path.getsize(os.path.join(d, f))"
            " for d, _, fs in os.walk('.') for f in fs))",
        ),
    )
    outcome = hostile.drive(hostile.repo("zero-files"), fixture, deadline_s=120)
    output = outcome.command_output()
    measured = (
        f"a {len(diff)}-byte patch; the verification's private checkout held"
        f" {output.strip()!r} bytes (the worktree bound is {WORKTREE_BYTES})"
    )
    checked = [int(w) for w in output.split()[1:2] if w.isdigit()]
    assert not checked or checked[0] <= WORKTREE_BYTES, measured + "\n" + outcome.describe()
    assert_fails_closed(outcome, *BOUND_RULES)


LONG_NAMES = 40_000


def _long_names(repo: Path, files: int, per_folder: int = 1000) -> list[str]:
    """``files`` one-line files whose names are 300 bytes (past NAME_MAX, 255): git can
    check none of them out, and says so once per file."""
    blob = (
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "hash-object", "-w", "--stdin"],
            input=b"x\n",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    entries = []
    for folder in range(files // per_folder):
        body = "".join(f"100644 blob {blob}\t{i:05d}{'n' * 295}\n" for i in range(per_folder))
        sub = (
            subprocess.run(
                ["git", "-c", "safe.directory=*", "-C", str(repo), "mktree"],
                input=body.encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        entries.append(f"040000 tree {sub}\tf{folder:02d}")
    return entries


def test_a_base_checkout_git_refuses_file_by_file_is_refused_in_bounded_words(
    hostile: Hostile,
) -> None:
    """A base tree of names no file system takes (300 bytes each): git's checkout fails
    with one ``unable to create file ...: File name too long`` line per file, and kodo
    held all of git's stderr (``capture_output``), raised it whole in a GitError
    (``_failed``) and logged it whole in the step's crash: measured, one worker log line
    of 14.2 MB and 111 MB of worker growth from 4.6 kB of objects (the 40 folders share
    one tree object). It grows linearly with the names: a million of them is still a few
    kB of objects (a tree of 1,000 such trees) and some 350 MB of stderr held, copied and
    logged per attempt, past the worker's memory. The run's error and diagnostic are
    capped (4 kB, 256 kB), but the step crashed (``step.crashed``), naming no rule."""
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    logs = {p: p.stat().st_size for p in hostile.stack.log_dir.glob("*.log")}
    repo = hostile.repo("long-names")
    _commit_tree_with(repo, _long_names(repo, LONG_NAMES), "generated fixtures")
    stored = _objects_bytes(repo)
    fixture = hostile.fixture(
        "long-names",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
    )
    outcome = hostile.drive(repo, fixture, deadline_s=150)
    grew = hostile.worker_peak_rss_mb() - before
    longest = 0
    for path in hostile.stack.log_dir.glob("*.log"):
        with path.open("rb") as log:
            log.seek(logs.get(path, 0))
            for line in log:
                longest = max(longest, len(line))
    measured = (
        f"a repository of {stored} bytes of objects: the longest new log line is {longest}"
        f" bytes, the worker grew {grew:.0f} MB"
    )
    assert longest <= 64 * 1024, measured + "\n" + outcome.describe()
    assert grew < 50, measured
    assert_fails_closed(outcome, "base_checkout", "max_checkout_files", "unfaithful_checkout")
