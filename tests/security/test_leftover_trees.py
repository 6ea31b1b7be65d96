"""What a command leaves in its worktree cannot wedge the host side.

A verification command may leave a folder chain thousands deep or paths past PATH_MAX.
The worker hands the worktree to the sandbox's uid and back around the command, and the
reconciler removes finished runs' worktrees: a walk in Python recursed past its limit
(RecursionError) and failed on long paths (ENAMETOOLONG), so ExecuteST crashed naming no
rule, the tree stayed owned by the sandbox's uid, and every cleanup pass raised on the
poisoned run first, so no other run's worktree was ever removed. (Found by a red-team
pass.)
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import hostile_stack
from tests.security.harness import Hostile, script_attack

pytestmark = pytest.mark.security

LEFTOVERS_REDIS_DB = 8  # of the session's own Redis: this module's broker alone

DEEP = """
def deep():
    os.makedirs(".cache", exist_ok=True)
    os.chdir(".cache")
    for _ in range(CFG["depth"]):
        os.mkdir("d")
        os.chdir("d")
    open("leaf.txt", "w").write("x")
attempt("deep-tree", deep)
"""

LONG = """
def long_path():
    for i in range(20):
        name = chr(ord("a") + i) * 250
        os.mkdir(name)
        os.chdir(name)
    open("leaf", "w").write("x")
attempt("long-path", long_path)
"""


@pytest.fixture(scope="module")
def hostile(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    env = {
        "KODO_WORKTREE_GRACE_S": "1",  # a finished run's cleanup is due at once
        "KODO_RECONCILE_S": "2",
    }
    workspaces: list[Path] = []
    try:
        with hostile_stack(
            database_url,
            redis_url,
            tmp_path_factory,
            name="hostile-leftovers",
            redis_db=LEFTOVERS_REDIS_DB,
            env=env,
        ) as stack:
            workspaces.append(stack.workspaces)
            yield stack
    finally:  # once stopped: pytest's own tmp cleanup recurses, coreutils does not
        for folder in workspaces:
            subprocess.run(["rm", "-rf", str(folder)], check=False)


def _owners(path: Path) -> set[int]:
    """Every owner under ``path`` (an iterative walk with fds: deep and long trees too)."""
    found: set[int] = set()
    pending = [os.open(path, os.O_RDONLY | os.O_DIRECTORY)]
    while pending:
        fd = pending.pop()
        try:
            for name in os.listdir(fd):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                found.add(st.st_uid)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
        finally:
            os.close(fd)
    return found


def _gone(path: Path, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return not path.exists()


@pytest.mark.parametrize(("name", "body"), [("deep", DEEP), ("long", LONG)])
def test_a_tree_the_command_leaves_is_taken_back_and_cleaned_up_with_the_others(
    hostile: Hostile, name: str, body: str
) -> None:
    poisoned = script_attack(hostile, name, body, depth=1500)
    worktree = hostile.workspaces / poisoned.run_id
    if worktree.exists():  # it may be cleaned already (grace 1 s)
        assert _owners(worktree) == {os.geteuid()}, "every entry handed back to the worker"
    innocent = hostile.drive(hostile.repo(f"innocent-{name}"), hostile.fixture(f"innocent-{name}"))

    assert poisoned.status == "succeeded", poisoned.describe()
    assert "BLOCKED" not in poisoned.command_output(), "the tree was made"
    assert innocent.status == "succeeded", innocent.describe()
    assert _gone(worktree, 40), "the poisoned worktree is removed"
    assert _gone(hostile.workspaces / innocent.run_id, 40), "and so is every other one"
    assert "cleanup.crashed" not in hostile.log_text()
