"""The daemon's bubblewrap sandbox: only the workspaces folder (and its own HOME) is writable.

OpenCode's own permission rules are not enough to keep an agent inside its worktree
(``docs/opencode-confinement.md``: its tracker reports ``external_directory`` bypasses,
and 1.18.33 follows a symlink inside the worktree to write outside it). So ``kodo oc up``
runs ``opencode serve`` in a view of the filesystem built from an allowlist:

* read-only: ``/usr`` (and the merged-/usr links), a few ``/etc`` files a program needs
  to start and reach an LLM over TLS, the opencode binary and the daemon's config file;
* writable: the workspaces folder (the runs' worktrees) and the daemon's own HOME;
* absent: the source repositories. The daemon is one process for every run, so what
  one agent may read, all may: a repository's working files (an uncommitted ``.env``),
  its ``.git/config`` (a remote's token) and every branch. A worktree's ``.git`` file
  names a git dir that is not there, so the daemon takes the worktree for a plain
  folder (no snapshots, no project id written); kodo makes the patch with its own git;
* private: ``/tmp`` (a tmpfs), ``/proc`` (its own PID namespace: no other process's
  environment is readable), ``/dev``;
* hidden: kodo's state (``.kodo``: ``up.json`` names the database, the daemon's
  password file) wherever a bind above would otherwise show it; nothing else of ``/``,
  ``/root`` or ``/home`` is there at all.

The network is shared (the daemon serves on loopback and calls its LLM); every
capability is dropped, so the daemon (root inside when kodo runs as root) can neither
mount nor override file modes it does not own. The environment is the one
:func:`devstack.oc_daemon.daemon.daemon_env` builds from an allowlist, never the caller's.

:func:`bwrap_argv` is pure (tested without bubblewrap); :func:`find_bwrap` fails closed
with the rule's name and how to install it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RULE = "oc_daemon_sandbox"
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or run"
    " `kodo oc up --no-sandbox` (UNSAFE: the daemon can then write anywhere kodo can)"
)
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Top-level system paths: a symlink into /usr (merged /usr) or a directory bound read-only."""
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/pki/tls/openssl.cnf",
    "/etc/pki/ca-trust",
    "/etc/gitconfig",
    "/etc/mime.types",
)
"""Host /etc entries the daemon (a Bun binary that may call an LLM over TLS, and git) reads;
bound only if present. The certificate folders alone, never ``/etc/ssl`` or ``/etc/pki``
whole: their ``private`` folders hold the host's TLS keys, which the daemon (root
without capabilities is still their owner) could otherwise read."""


class SandboxRefused(RuntimeError):
    """The sandbox cannot be built as asked; the message names the rule."""


@dataclass(frozen=True)
class DaemonSandbox:
    """What the daemon may see and write."""

    bwrap: str
    binary: Path
    home: Path  # the daemon's HOME (database, logs, caches): writable
    config: Path  # OPENCODE_CONFIG: read-only
    workspaces: Path  # the runs' worktrees: writable
    hidden: tuple[Path, ...] = ()  # kodo's state: masked wherever a bind would show it


def find_bwrap(name: str = "bwrap", search_path: str | None = None) -> str:
    """The bubblewrap executable, or SandboxRefused naming the rule and the fix."""
    found = shutil.which(name, path=search_path)
    if found is None:
        raise SandboxRefused(
            f"{RULE}: the OpenCode daemon runs only inside a bubblewrap sandbox, and"
            f" {name!r} is not on PATH: {INSTALL_HINT}"
        )
    return found


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _mounts(box: DaemonSandbox) -> list[tuple[str, str]]:
    """(kind, path) with kind ``ro``/``rw``/``hide``, parents before children, so a mask
    lands over a bind that contains it and a bind inside a mask shows through it."""
    binds = [("rw", box.workspaces), ("rw", box.home), ("ro", box.config), ("ro", box.binary)]
    paths = [p for _, p in binds]
    for kind, path in binds:
        for secret in box.hidden:
            if kind == "rw" and path != box.home and _inside(secret, path):
                raise SandboxRefused(
                    f"{RULE}: the writable {path} contains kodo's state {secret};"
                    " choose a workspaces folder outside it"
                )
    masks = [("hide", s) for s in box.hidden if any(_inside(s, p) and s != p for p in paths)]
    for secret in box.hidden:
        if secret == box.workspaces:
            raise SandboxRefused(f"{RULE}: {secret} is both kodo's state and a bind")
    ordered = sorted([*binds, *masks], key=lambda m: (len(m[1].parts), m[0] != "hide"))
    return [(kind, str(path)) for kind, path in ordered]


def bwrap_argv(
    box: DaemonSandbox,
    command: Sequence[str],
    *,
    links: Mapping[str, str],
    system_dirs: Sequence[str],
    etc: Sequence[str],
) -> list[str]:
    """The bubblewrap command line running ``command`` (pure).

    ``links`` are the host's merged-/usr symlinks (path -> target), ``system_dirs``
    its real top-level system directories and ``etc`` the :data:`ETC_FILES` present.
    """
    argv = [box.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", "kodo-oc", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path, target in sorted(links.items()):
        argv += ["--symlink", target, path]
    for path in system_dirs:
        argv += ["--ro-bind", path, path]
    for path in etc:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (private)
    for kind, path in _mounts(box):
        if kind == "hide":
            argv += ["--tmpfs", path, "--remount-ro", path]
        else:
            argv += ["--bind" if kind == "rw" else "--ro-bind", path, path]
    # The root is bubblewrap's own tmpfs, holding the directories it made for the binds:
    # read-only, so nothing is written anywhere but the writable binds.
    # No --setenv: the environment (an allowlist, daemon_env) is bubblewrap's own, which
    # it hands to the command; a value on its argv (the daemon's password, the provider's
    # key) would be readable in /proc/<pid>/cmdline by every process on the host.
    argv += ["--remount-ro", "/", "--chdir", str(box.home)]
    return [*argv, "--", *command]


def host_layout() -> tuple[dict[str, str], list[str], list[str]]:
    """This host's merged-/usr links, real system directories and present /etc files."""
    links: dict[str, str] = {}
    dirs: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            links[path] = os.readlink(path)
        elif os.path.isdir(path):
            dirs.append(path)
    etc = [p for p in ETC_FILES if os.path.lexists(p)]
    return links, dirs, etc


def sandboxed(box: DaemonSandbox, command: Sequence[str]) -> list[str]:
    """``command`` wrapped for this host; run it with the daemon's environment (bwrap
    passes its own on)."""
    links, dirs, etc = host_layout()
    return bwrap_argv(box, command, links=links, system_dirs=dirs, etc=etc)
