"""What weighing a tree before its checkout also tells: whether it carries a
``__pycache__`` (a verification command on it then runs with Python's bytecode lookups
pointed away, PYCACHE_PREFIX; a tree without one runs with the standard library's
bytecode, as Python ships it), and its regular files, which the checkout's faithfulness
check reads instead of listing the tree again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services.worker.git_ops import (
    CheckoutBounds,
    GitError,
    PrivateCheckout,
    TreeFile,
    checkout_refusal,
    private_checkout,
    regular_files,
    weigh_checkout,
)
from tests.integration.worker.test_git_hardening import count_git

pytestmark = pytest.mark.integration

BOUNDS = CheckoutBounds.of_worktree(8 << 20)


def _commit(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
        return done.stdout.decode().strip()

    git("init", "-q", "-b", "main")
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
        git("add", "-f", name)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "base")
    return repo, git("rev-parse", "HEAD")


@pytest.mark.parametrize(
    "cache",
    [
        "__pycache__/calc.cpython-311.pyc",
        "pkg/__pycache__/mod.cpython-311.pyc",
        "deep/er/__pycache__/x.pyc",
    ],
)
def test_a_tree_carrying_a_pycache_is_said_to_carry_bytecode(tmp_path: Path, cache: str) -> None:
    repo, commit = _commit(tmp_path, {"calc.py": b"x = 1\n", cache: b"\x00" * 16})

    weighed = weigh_checkout(repo, commit, BOUNDS)

    assert weighed.refusal is None
    assert weighed.carries_bytecode


def test_a_link_named_pycache_counts_as_bytecode(tmp_path: Path) -> None:
    """Python follows a ``__pycache__`` link to wherever it points."""
    repo, commit = _commit(tmp_path, {"calc.py": b"x = 1\n", "cache/calc.pyc": b"\x00"})
    (repo / "__pycache__").symlink_to("cache")
    subprocess.run(["git", "add", "__pycache__"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "link"],
        cwd=repo,
        check=True,
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()

    assert weigh_checkout(repo, head, BOUNDS).carries_bytecode
    assert not weigh_checkout(repo, commit, BOUNDS).carries_bytecode


@pytest.mark.parametrize(
    "name", ["pycache/calc.pyc", "__pycache__x/calc.pyc", "my__pycache__.py", "calc.pyc"]
)
def test_names_that_only_resemble_a_pycache_do_not(tmp_path: Path, name: str) -> None:
    """Python reads bytecode in place of source only from a folder named exactly
    ``__pycache__``; a sourceless ``calc.pyc`` beside nothing is the module_shadow rule's."""
    repo, commit = _commit(tmp_path, {"calc.py": b"x = 1\n", name: b"\x00"})

    weighed = weigh_checkout(repo, commit, BOUNDS)

    assert weighed.refusal is None
    assert not weighed.carries_bytecode


def test_the_weighing_lists_the_files_the_faithfulness_check_would_list(tmp_path: Path) -> None:
    """Regular files only (a link is judged by what it names, not hashed), every name as
    the filesystem spells it: quoted, tabbed, not UTF-8, executable."""
    repo, _ = _commit(
        tmp_path,
        {
            "calc.py": b"x = 1\n",
            '"q"/t.py': b"y\n",
            "tab\tname.txt": b"z\n",
            os.fsdecode(b"caf\xe9.py"): b"w\n",
            "run.sh": b"#!/bin/sh\n",
        },
    )
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("calc.py")
    for args in (
        ["add", "-A"],
        ["-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "2"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()

    weighed = weigh_checkout(repo, head, BOUNDS)
    listed = regular_files(PrivateCheckout(repo, repo / ".git", tmp_path / "index"), head)

    assert sorted(weighed.files) == sorted(listed)
    assert {f.path for f in weighed.files} == {
        "calc.py",
        '"q"/t.py',
        "tab\tname.txt",
        os.fsdecode(b"caf\xe9.py"),
        "run.sh",
    }
    assert TreeFile("calc.py", _blob(repo, "calc.py"), 6) in weighed.files


def test_a_checkout_is_never_made_on_another_commits_weighing_nor_a_refused_one(
    tmp_path: Path,
) -> None:
    repo, first = _commit(tmp_path, {"calc.py": b"x = 1\n"})
    (repo / "calc.py").write_bytes(b"x = 2\n")
    subprocess.run(
        ["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qam", "2"],
        cwd=repo,
        check=True,
    )
    second = _blob(repo, "HEAD")
    workspace = tmp_path / "ws"
    weighed = weigh_checkout(repo, first, BOUNDS)

    with (
        pytest.raises(GitError, match="weighing"),
        private_checkout(repo, workspace, "run-1", second, weighed=weighed),
    ):
        pytest.fail("checked out on another commit's listing")
    refused = weigh_checkout(repo, first, CheckoutBounds(max_bytes=1, max_files=1024))
    assert refused.refusal is not None
    with (
        pytest.raises(GitError, match="weighing"),
        private_checkout(repo, workspace, "run-1", first, weighed=refused),
    ):
        pytest.fail("checked out a tree its weighing refused")
    with private_checkout(repo, workspace, "run-1", first, weighed=weighed) as tree:
        assert (tree / "calc.py").read_bytes() == b"x = 1\n"


def _blob(repo: Path, name: str) -> str:
    spec = name if name == "HEAD" else f"HEAD:{name}"
    done = subprocess.run(
        ["git", "rev-parse", spec], cwd=repo, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def test_a_base_found_within_bounds_is_weighed_once_and_a_refused_one_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs on one base commit share its verdict (its tree never changes); a refusal is
    never remembered, nor a verdict under other bounds."""
    repo, commit = _commit(tmp_path, {"calc.py": b"x = 1\n" * 100})
    started = count_git(monkeypatch)

    def listings() -> int:
        return sum("ls-tree" in args for args in started)

    assert checkout_refusal(repo, commit, BOUNDS) is None
    assert checkout_refusal(repo, commit, BOUNDS) is None
    weighed_once = listings()
    tight = CheckoutBounds(max_bytes=10, max_files=1024)
    assert checkout_refusal(repo, commit, tight) is not None
    assert checkout_refusal(repo, commit, tight) is not None

    assert weighed_once == 1
    assert listings() == 3
    with pytest.raises(GitError, match="not a commit id"):
        checkout_refusal(repo, "HEAD", BOUNDS)
