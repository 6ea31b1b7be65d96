"""Red-team attacks on the sandbox: what a hostile verification command tries next.

Each test runs a command the way ExecuteST would and asserts the safe outcome: no
namespace of its own, no memory beyond the limits, nothing planted that outlives the
run with rights it should not have, nothing shared with a later run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.config import Settings
from tests.integration.worker.test_sandbox import run_python, said, worktree  # noqa: F401

pytestmark = pytest.mark.integration

NESTED_USERNS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x20000
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
    print("REFUSED", os.strerror(ctypes.get_errno()))
else:
    open("/proc/self/uid_map", "w").write("0 65534 1")
    print("NESTED-ROOT", os.getuid())
    src, dst = b"none", b"/tmp"
    if libc.mount(src, dst, b"tmpfs", 0, b"size=100%") == 0:
        print("MOUNTED-UNBOUNDED-TMPFS")
"""


def test_the_command_cannot_make_a_user_namespace_of_its_own(worktree: Path) -> None:  # noqa: F811
    """A nested user namespace is root over its own mounts: an unbounded tmpfs (memory
    no rlimit counts) and every namespace trick; the sandbox refuses to make one."""
    done = run_python(NESTED_USERNS, worktree)
    assert "REFUSED" in said(done), said(done)
    assert "NESTED-ROOT" not in said(done)
    assert "MOUNTED" not in said(done)


MEMFD = """
import os
fds, total, chunk = [], 0, b"\\0" * (1 << 20)
try:
    for _ in range(12):
        fd = os.memfd_create("x")
        fds.append(fd)
        for _ in range(32):
            os.write(fd, chunk)
            total += len(chunk)
except OSError as exc:
    print("STOPPED", exc)
print("HELD-MB", total >> 20)
"""


def test_memory_held_in_memfds_is_bounded_by_the_memory_limit(worktree: Path) -> None:  # noqa: F811
    limit = 128 << 20
    done = run_python(
        MEMFD, worktree, settings=Settings(exec_memory_bytes=limit, exec_fsize_bytes=64 << 20)
    )
    held = int(said(done).split("HELD-MB", 1)[1].split()[0]) if "HELD-MB" in said(done) else 0
    assert held << 20 <= limit, f"the command held {held} MB with a {limit >> 20} MB limit"


LEFT_BEHIND = """
import os
open("suid", "w").write("#!/bin/sh\\n")
os.chmod("suid", 0o6755)
os.mkdir("drop")
os.chmod("drop", 0o3777)
open("open-to-all", "w").write("x")
os.chmod("open-to-all", 0o666)
os.mkfifo("fifo")
os.symlink("/etc/shadow", "shadow-link")
try:
    os.link(".git", "git-hardlink")
    print("LINKED .git")
except OSError as exc:
    print("NO-LINK", exc)
print("PLANTED")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the worktree is lent only when the worker is root")
def test_what_the_command_leaves_never_comes_back_to_the_worker(tmp_path: Path) -> None:
    """As root, the worker lends the tree to the sandbox uid and takes it back, and the
    command wrote to an overlay: a set-id file, a set-id directory, a FIFO, a symlink or
    a hard link the command planted never reaches the host's tree, whose own entries
    come back to their owner."""
    tree = tmp_path / "ws" / "run-a"
    tree.mkdir(parents=True)
    tmp_path.chmod(0o755)
    (tree / ".git").write_text("gitdir: /nonexistent/.git/trees/run-a\n")
    (tree / "calc.py").write_text("x = 1\n")
    dotgit = (tree / ".git").stat()
    done = run_python(LEFT_BEHIND, tree)
    assert "PLANTED" in said(done), said(done)
    assert sorted(p.name for p in tree.iterdir()) == [".git", "calc.py"]
    for entry in (tree, tree / "calc.py"):
        assert entry.lstat().st_uid == dotgit.st_uid, f"{entry} is still the sandbox uid's"
    assert (tree / ".git").stat().st_ino == dotgit.st_ino
    assert Path("/etc/shadow").stat().st_uid == 0


KEYRING_WRITE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
key = libc.syscall(248, b"user", b"kodo-red-team", b"secret-from-run-a", 17, -3)  # add_key @us
print("ADDED", key)
"""
KEYRING_READ = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
found = libc.syscall(250, 10, -3, b"user", b"kodo-red-team", 0)  # KEYCTL_SEARCH @us
print("FOUND" if found > 0 else "ABSENT", found, os.strerror(ctypes.get_errno()))
"""


def test_a_later_run_does_not_find_keys_an_earlier_command_left(tmp_path: Path) -> None:
    """The kernel keyring is not a channel from one sandboxed run to the next."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    tmp_path.chmod(0o755)
    wrote = run_python(KEYRING_WRITE, first)
    assert "ADDED" in said(wrote), said(wrote)
    read = run_python(KEYRING_READ, second)
    assert "ABSENT" in said(read), said(read)
