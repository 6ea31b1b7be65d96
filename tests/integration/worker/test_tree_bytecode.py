"""A tree's ``__pycache__`` is noticed while it is weighed, so a verification command on
it runs with Python's bytecode lookups pointed away (PYCACHE_PREFIX), and a tree without
one runs with the standard library's bytecode, as Python ships it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.git_ops import CheckoutBounds, weigh_checkout

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
