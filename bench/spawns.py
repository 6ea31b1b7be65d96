"""Count the processes kodo's API and workers start, by what they run.

Every git a step runs, every sandbox and every verification command is a process
start: their CPU is most of a run's own work, and each start has a cost of its own
(the exec, the dynamic linker, bubblewrap's namespaces and mounts). The bench counts
them per run in the same counters as the SQL (:mod:`bench.sqlcount`), labelled by
what runs: ``git diff``, ``bwrap git read-tree`` (a pinned git: the sandbox counts
once, named by the program it runs), ``bwrap perl``, ``nsenter``.

Installed by wrapping the two ways kodo starts a process (``subprocess.Popen``'s
``_execute_child``, and ``os.posix_spawn`` for the gevent-patched API): called once
per start, so counting costs nothing measurable, where an audit hook would run on every
file open of the process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

# bubblewrap's options by the number of values each takes; "--" ends them
_BWRAP_FLAGS = frozenset(
    {
        "--unshare-all", "--share-net", "--unshare-user", "--unshare-user-try",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup", "--unshare-cgroup-try", "--as-pid-1", "--new-session",
        "--die-with-parent", "--clearenv", "--disable-userns", "--assert-userns-disabled",
    }
)  # fmt: skip
_BWRAP_ONE = frozenset(
    {
        "--userns", "--userns2", "--pidns", "--uid", "--gid", "--hostname", "--chdir",
        "--unsetenv", "--lock-file", "--sync-fd", "--remount-ro", "--exec-label",
        "--file-label", "--proc", "--dev", "--tmpfs", "--mqueue", "--dir", "--seccomp",
        "--add-seccomp-fd", "--block-fd", "--userns-block-fd", "--info-fd",
        "--json-status-fd", "--cap-add", "--cap-drop", "--perms", "--size", "--argv0",
    }
)  # fmt: skip
_BWRAP_TWO = frozenset(
    {
        "--setenv", "--bind", "--bind-try", "--dev-bind", "--dev-bind-try", "--ro-bind",
        "--ro-bind-try", "--bind-fd", "--ro-bind-fd", "--file", "--bind-data",
        "--ro-bind-data", "--symlink", "--chmod",
    }
)  # fmt: skip
_GIT_VALUED = frozenset({"-c", "-C"})  # git's global options that take the next word


def label(argv: Sequence[str]) -> str:
    """What a process start runs, for counting: the program's name, git's subcommand,
    and for bubblewrap the program it runs (``bwrap ?`` when its options cannot be
    read: an option this table does not know)."""
    if not argv:
        return "?"
    program = os.path.basename(argv[0])
    if program == "bwrap":
        inner = _bwrap_command(argv[1:])
        return "bwrap ?" if inner is None else f"bwrap {label(inner)}"
    if program == "git":
        words = iter(argv[1:])
        for word in words:
            if word in _GIT_VALUED:
                next(words, None)
            elif not word.startswith("-"):
                return f"git {word}"
        return "git"
    return program


def _bwrap_command(args: Sequence[str]) -> Sequence[str] | None:
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return args[i + 1 :]
        if not word.startswith("--"):
            return args[i:]
        if word in _BWRAP_FLAGS:
            i += 1
        elif word in _BWRAP_ONE:
            i += 2
        elif word in _BWRAP_TWO:
            i += 3
        else:
            return None
    return None


def _words(args: Any) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(a) for a in args]


_originals: dict[str, Any] = {}


def install(bump: Callable[[str], None]) -> None:
    """Count every process start of this process as ``spawn:<label>`` (once per process;
    a forked child keeps the wrappers)."""
    if _originals:
        return
    execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    spawn = os.posix_spawn
    _originals.update(execute_child=execute_child, posix_spawn=spawn)

    def counted_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> Any:
        bump(f"spawn:{label(_words(args))}")
        return execute_child(self, args, *rest, **kw)

    def counted_spawn(path: Any, argv: Any, *rest: Any, **kw: Any) -> int:
        bump(f"spawn:{label(_words(argv))}")
        return spawn(path, argv, *rest, **kw)

    subprocess.Popen._execute_child = counted_child  # type: ignore[attr-defined]
    os.posix_spawn = counted_spawn


def uninstall() -> None:
    """Put the originals back (a test that installed in a shared process)."""
    if not _originals:
        return
    subprocess.Popen._execute_child = _originals["execute_child"]  # type: ignore[attr-defined]
    os.posix_spawn = _originals["posix_spawn"]
    _originals.clear()
