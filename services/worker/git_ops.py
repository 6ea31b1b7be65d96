"""Git worktrees and patches: the only code that changes a repository.

The build agent edits a worktree with its tools; what it changed is staged and read
back from the index (:func:`stage_edits`) and judged by :mod:`shared.domain.change_check`;
nothing an agent says about paths is parsed here. Everything
runs as argv (no shell) with a timeout.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import structlog

from services.worker.sandbox.layout import BYTES_PER_INODE
from services.worker.sandbox.toolchain import host_system
from services.worker.worktree_guard import (
    FOLDER,
    RULE,
    PointerRewritten,
    folder_identity,
    link_below,
    open_folder,
    regular_below,
    remove_special_files,
    shown_path,
    verified_gitdir,
)
from shared.apart import run_apart
from shared.domain.change_check import (
    SYMLINK,
    IndexChange,
    RawRecords,
    parse_raw_numstat,
)
from shared.domain.source_encoding import HEAD_BYTES, declared_coding
from shared.domain.step_outcome import RuleRefusal
from shared.domain.tree_links import TreeLinks
from shared.git_dir import GIT_DIR_RULE, git_dir_refusal, info_attributes_refusal
from shared.gitcmd import (
    GitTimeout,
    HardenedGit,
    attribute_free,
    base_env,
    config_env,
    hardened_args,
    hardening_for,
    run_git,
)
from shared.hashing import git_blob_digest, sha256_hex
from shared.lru import Lru
from shared.plain_file import read_plain, read_plain_text
from shared.real_path import resolved

GIT_TIMEOUT_S = 60
_IDENTITY = {"user.name": "kodo", "user.email": "kodo@localhost"}

log = structlog.get_logger("kodo.git")


class GitError(RuntimeError):
    pass


class PatchTooLarge(GitError):
    """The patch git shows is over the policy's ``max_patch_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the patch (its stat and diff, as git shows it) is over {max_bytes} bytes"
            f" (max_patch_bytes {max_bytes})"
        )
        self.max_bytes = max_bytes


class PinUnavailable(GitError, RuleRefusal):
    """bubblewrap cannot pin a worktree's folder for kodo's git (see :class:`Worktree`)."""

    rule = "sandbox_required"


class IndexLocked(GitError, RuleRefusal):
    """A git of kodo's on this worktree stopped (killed at its timeout, or a worker that
    died) and left the index's lock file: every later git writing the index fails until
    an operator removes it (after making sure no git still runs there)."""

    rule = "worktree_index_lock"


MAX_SAID_CHARS = 4000
"""What of git's error output a GitError carries: a base tree of names no file system
takes made git say one line per file, and the whole of it (14 MB) was raised and logged
in one line (red-team helper-116)."""


def _failed(args: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> GitError:
    """The error a failed git call raises: named when the rule is known."""
    said = proc.stderr[: MAX_SAID_CHARS * 4].decode(errors="replace").strip()
    if len(said) > MAX_SAID_CHARS or len(proc.stderr) > MAX_SAID_CHARS * 4:
        said = f"{said[:MAX_SAID_CHARS]}... [{len(proc.stderr)} bytes]"
    if "index.lock': File exists" in said:
        return IndexLocked(
            f"worktree_index_lock: git {' '.join(args)[:200]} found the index locked by a"
            f" git that never finished: {said[:500]}"
        )
    return GitError(f"git {' '.join(args)}: {said}")


class GitDirRefused(GitError, RuleRefusal):
    """A repository whose git dir kodo must not write into (:mod:`shared.git_dir`)."""

    rule = GIT_DIR_RULE


def confined_git_dir(repo: Path) -> None:
    """Raise GitDirRefused unless ``repo``'s git dir is its own (checked before each
    write or prune through it: the owner may have changed it since the submit)."""
    why = git_dir_refusal(repo)
    if why is not None:
        raise GitDirRefused(why)


class WorktreeTampered(GitError, RuleRefusal):
    """A run's worktree whose ``.git`` is not git's own pointer (worktree_guard): no git
    runs there, since git would read the git dir the pointer names."""

    rule = RULE


@dataclass(frozen=True)
class Worktree:
    """A run's worktree as :func:`open_worktree` verified it: its folder (by device and
    inode) and the git dir git keeps for it in the repository.

    The worktree's ``.git`` and its very folder are the daemon's to rewrite at any moment
    (worktree_guard), so neither is ever looked up again by name. git that needs no work
    tree runs in the git dir itself, with none (:func:`git`); git that reads or writes
    the work tree (:func:`tree_git`) gets a descriptor of the verified folder bound at a
    private mount point by bubblewrap (``bwrap``; None only when the operator turned the
    sandbox off, and then git is told the folder's name), and kodo's own reads go through
    such a descriptor (:func:`pinned`).
    """

    path: Path
    gitdir: Path
    identity: tuple[int, int]
    bwrap: str | None = "bwrap"
    quarantine: Path | None = None
    """Where git writes the objects it makes and keeps the index it stages into
    (:func:`quarantined`), reading the repository's objects as alternates; None: the
    repository's object store and the run's own index."""

    @property
    def common(self) -> Path:
        """The repository's git dir: ``<repo>/.git/worktrees/<id>`` -> ``<repo>/.git``."""
        return self.gitdir.parent.parent

    def object_env(self) -> dict[str, str]:
        """git's object and index environment for this worktree (nothing without a
        quarantine)."""
        if self.quarantine is None:
            return {}
        return {
            "GIT_OBJECT_DIRECTORY": str(self.quarantine),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self.common / "objects"),
            "GIT_INDEX_FILE": str(self.quarantine / "index"),
        }


def open_worktree(path: Path, repo: Path, *, bwrap: str | None = "bwrap") -> Worktree:
    """The run's worktree ``path`` (``<workspaces>/<run_id>``) with the git dir its
    ``.git`` names, once that is git's own record of this very folder in ``repo`` and its
    HEAD is the run's branch (WorktreeTampered otherwise)."""
    try:
        identity = folder_identity(path)
        gitdir = verified_gitdir(path, repo)
        if folder_identity(path) != identity:  # swapped while its pointer was read
            raise PointerRewritten(f"{RULE}: {path} was replaced while it was opened")
    except PointerRewritten as exc:
        raise WorktreeTampered(str(exc)) from exc
    tree = Worktree(path, gitdir, identity, bwrap)
    current, expected = _head_branch(tree), run_branch(path.name)
    if current != expected:
        raise WorktreeTampered(
            f"{RULE}: {path} is on {current or 'no branch'}, expected {expected}"
        )
    return tree


def run_branch(run_id: str) -> str:
    return f"kodo/{run_id}"


@contextmanager
def pinned(tree: Worktree) -> Iterator[int]:
    """A descriptor of the worktree's folder, still the one it was opened as
    (WorktreeTampered otherwise)."""
    try:
        fd = open_folder(tree.path, tree.identity)
    except PointerRewritten as exc:
        raise WorktreeTampered(str(exc)) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def pin_point(tree: Worktree) -> Path:
    """``<workspaces>.pin``: the empty folder a pinned git sees the worktree at, in its own
    mount namespace; a sibling of the workspaces folder, out of the daemon's reach."""
    return own_folder(_beside(tree.path.parent, "pin"))


def _run(
    where: Path | Worktree,
    args: list[str] | tuple[str, ...],
    *,
    stdin: bytes | None = None,
    config: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Hardened git in a repository (a path), or with no work tree in a run's verified
    git dir (``--bare``: git reads no name in the worktree, and no ``.gitattributes``)."""
    if isinstance(where, Worktree):
        bare = [*attribute_free(where.gitdir), *args]
        return run_git(
            where.gitdir,
            bare,
            stdin=stdin,
            timeout_s=GIT_TIMEOUT_S,
            config=config,
            objects=where.object_env(),
        )
    return run_git(where, args, stdin=stdin, timeout_s=GIT_TIMEOUT_S, config=config)


def git(where: Path | Worktree, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
    """Run hardened git (shared.gitcmd: no hooks, drivers or fsmonitor) as kodo; in a
    worktree, with no work tree (a command that needs one fails: :func:`tree_git`)."""
    proc = _run(where, args, stdin=stdin, config=_IDENTITY)
    if check and proc.returncode != 0:
        raise _failed(args, proc)
    return proc.stdout.decode(errors="replace")


Writes = Literal["tree", "objects", "repository"]
"""What a pinned git may write besides the worktree's folder: nothing (``tree``: ``git
clean``, ``status``, ``read-tree`` with an index of kodo's own), the run's git dir and
the repository's objects (``objects``: ``git add``), or the whole repository git dir
(``repository``: ``git commit`` moves the run's branch)."""


def git_root(
    tree: Worktree, writes: Writes, scratch: Path | None = None, configs: Sequence[Path] = ()
) -> list[str]:
    """bubblewrap's arguments that build a pinned git's whole filesystem: the system
    (``/usr`` and its links, the dynamic linker's cache, the time zone, a minimal
    ``/dev``) and the repository's git dir with the config files git reads
    (``configs``: an included one, or one behind a link), read-only, with writable over
    them only what ``writes`` names; every other path of the host is absent, and of the
    repository's worktree records only the run's own is there.

    git reads and writes worktree files by name. Another run's agent that swaps a folder
    of the worktree for a link while git is busy in it sends git's later names through
    the link: with the host bound writable, ``git clean`` (as root) deleted files
    anywhere, another run's registration among them; with the host bound read-only,
    ``git add`` staged a root-only file from outside into the repository's objects, and
    ``git status`` listed other runs' records by name (red-team passes). In a root
    holding nothing else, a link leads only to the system and the repository's git dir.
    """
    common = tree.common
    shared = [common / part for part in ("objects", "refs", "logs")]
    staging = [common / "objects", tree.gitdir] if tree.quarantine is None else [tree.quarantine]
    writable = {
        "tree": [],
        "objects": staging,
        "repository": [common, *shared],  # each part again: it may be a link elsewhere
    }[writes]
    if scratch is not None:
        writable = [*writable, scratch]
    mounts: dict[str, str] = {}  # real path -> how it is mounted
    own_configs = [common / "config", tree.gitdir / "config.worktree"]  # maybe links
    held = [] if tree.quarantine is None else [tree.quarantine]
    readable = [common, *shared, *_alternates(common / "objects"), *own_configs, *configs, *held]
    for path in readable:
        if path.exists():  # bound where it really is: git reaches it through the links
            mounts.setdefault(str(resolved(path)), "--ro-bind")
    for path in writable:
        if path.exists():
            mounts[str(resolved(path))] = "--bind"
    records = tree.gitdir.parent  # resolved already (verified_gitdir)
    mounts[str(records)] = "--tmpfs"  # other runs' records hidden...
    mounts[str(tree.gitdir)] = "--bind" if writes != "tree" else "--ro-bind"  # ...not its own
    argv = [*_system_root(), "--dev", "/dev"]
    shown = _unshadowed(mounts)
    for real in sorted(shown, key=lambda p: p.count("/")):  # a parent before what it holds
        how = shown[real]
        argv += ["--size", str(1 << 16), "--tmpfs", real] if how == "--tmpfs" else [how, real, real]
    return argv


def _unshadowed(mounts: Mapping[str, str]) -> dict[str, str]:
    """``mounts`` (real path -> how) less each bind its nearest enclosing mount already
    shows alike: a folder bound read-only inside a folder bound read-only (the common
    dir's ``objects``, ``refs``, ``config`` where they are no links), or writable inside
    writable. bubblewrap binds recursively and each path is bound where it really is, so
    the parent's bind shows the same files; each bind it spares is a mount and a
    reading of the namespace's mount table, a tenth of a pinned git's CPU. A bind
    inside another kind (read-only inside writable, anything inside a tmpfs) stays."""
    kept: dict[str, str] = {}
    for real, how in mounts.items():
        parent = os.path.dirname(real)
        while parent not in mounts and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        if how == "--tmpfs" or mounts.get(parent) != how:
            kept[real] = how
    return kept


def _alternates(objects: Path) -> list[Path]:
    """The object folders ``objects/info/alternates`` names (absolute, or relative to the
    folder naming them), and theirs in turn, as deep as git follows them: git reads their
    objects too."""
    found: list[Path] = []
    folders = [objects]
    for _ in range(_ALTERNATE_DEPTH):
        named: list[Path] = []
        for folder in folders:
            try:
                listed = read_plain(folder / "info" / "alternates").decode(errors="replace")
            except OSError:
                continue
            lines = (line.strip() for line in listed.splitlines())
            named += [folder / line for line in lines if line and not line.startswith("#")]
        found += named
        folders = named
    return found


_ALTERNATE_DEPTH = 5  # git's own limit on alternates of alternates


_ROOT_ETC = ("/etc/ld.so.cache", "/etc/localtime")
_SYSTEM_SAID = "/usr or the folders beside it (/bin, /lib): kodo's git sees only those"


@functools.cache
def _system_root() -> tuple[str, ...]:
    """The host system a pinned git needs, as bubblewrap arguments: ``/usr`` and the
    top-level folders beside it (links where the host has merged them into ``/usr``), the
    linker's cache and the time zone."""
    host = host_system()
    argv = ["--ro-bind", "/usr", "/usr"]
    for path, target in host.links:
        argv += ["--symlink", target, path]
    for path in host.dirs:
        argv += ["--ro-bind", path, path]
    for path in _ROOT_ETC:
        argv += ["--ro-bind-try", path, path]
    return tuple(argv)


@functools.cache
def sandbox_git() -> str | None:
    """The git a pinned git runs: the first on PATH that lies in the system folders its
    root holds (None if none does). A git installed elsewhere (a home folder, /opt, a
    Nix store) would need its folder bound, a red-team pass found that folder could be
    the whole home or the whole host; kodo refuses to pin instead (sandbox_required)."""
    return _system_program("git")


@functools.cache
def sandbox_shell() -> str | None:
    """The ``sh`` that runs two pinned git commands in one sandbox (:func:`reset_worktree`),
    found as :func:`sandbox_git` finds git."""
    return _system_program("sh")


def _system_program(name: str) -> str | None:
    system = [Path("/usr"), *(Path(d) for d in host_system().dirs)]
    for folder in base_env()["PATH"].split(os.pathsep):
        found = Path(folder) / name
        if not found.is_absolute() or not os.access(found, os.X_OK):
            continue
        real = found.resolve()
        if any(real.is_relative_to(s) for s in system):
            return str(real)
    return None


def _confinement() -> list[str]:
    """What a pinned git shares with the host besides its files: nothing it needs. As root
    it keeps only the capabilities to read and write files other users own (the user's
    repository); no network, no other processes, no session of the worker's."""
    # git is the namespace's first process itself (--as-pid-1): bwrap's own reaper there
    # would be reaped by the host's init, and git's CPU with it, out of every account
    argv = ["--unshare-ipc", "--unshare-net", "--unshare-pid", "--as-pid-1", "--new-session"]
    if os.geteuid() == 0:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_DAC_OVERRIDE", "--cap-add", "CAP_FOWNER"]
    return argv


def _tree_run(
    tree: Worktree,
    args: list[str] | tuple[str, ...],
    *,
    stdin: bytes | None = None,
    writes: Writes = "tree",
    index_file: Path | None = None,
    then: tuple[str, ...] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Hardened git on the worktree's files: the verified folder, by descriptor, bound at
    :func:`pin_point` in a mount namespace of its own, whatever its name leads to now;
    in a root of the system and the repository's git dir alone (:func:`git_root`),
    read-only but for what ``writes`` names (and ``index_file``'s folder, when git is
    given an index of kodo's own).

    ``then``: a second git command run in the same sandbox once the first succeeded
    (``sh -c``, both hardened alike; kodo's own constant arguments only): a sandbox costs
    more CPU than the git it holds."""
    own_index = index_file is not None or tree.quarantine is not None
    config = {**_IDENTITY, "core.splitIndex": "false"} if own_index else _IDENTITY
    with pinned(tree) as fd:
        if tree.bwrap is None:  # KODO_SANDBOX=off: the operator's choice, said in the README
            done = run_git(
                tree.path,
                args,
                stdin=stdin,
                timeout_s=GIT_TIMEOUT_S,
                config=config,
                git_dir=tree.gitdir,
                index_file=index_file,
                objects=tree.object_env(),
            )
            if then is None or done.returncode != 0:
                return done
            return run_git(
                tree.path,
                then,
                timeout_s=GIT_TIMEOUT_S,
                config=config,
                git_dir=tree.gitdir,
                index_file=index_file,
                objects=tree.object_env(),
            )
        point = str(pin_point(tree))
        overrides, configs = hardening_for(tree.gitdir, config, GIT_TIMEOUT_S)
        env = {
            **base_env(),
            "GIT_DIR": str(tree.gitdir),
            "GIT_WORK_TREE": point,
            **config_env(overrides),
        }
        if index_file is not None:
            env["GIT_INDEX_FILE"] = str(index_file)
        env.update(tree.object_env())
        scratch = None if index_file is None else index_file.parent
        program = sandbox_git()
        if program is None:
            raise _pin_unavailable(tree.bwrap, f"no git on PATH lies in {_SYSTEM_SAID}")
        argv = [
            tree.bwrap,
            *_confinement(),
            *git_root(tree, writes, scratch, configs),
            "--bind-fd", str(fd), point,
            "--chdir", point,
            "--die-with-parent",
            *_commands(tree.bwrap, program, args, then),
        ]  # fmt: skip
        feed: dict[str, Any] = (
            {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        )
        try:
            proc = run_apart(
                argv,
                env=env,
                pass_fds=(fd,),
                capture_output=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
                **feed,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitTimeout(f"git {' '.join(args)} took longer than {GIT_TIMEOUT_S}s") from exc
        except (FileNotFoundError, PermissionError) as exc:  # no such program, or not ours to run
            raise _pin_unavailable(tree.bwrap, str(exc)) from exc
        except OSError as exc:  # an argument list too long, say: not the sandbox's fault
            raise GitError(f"git {' '.join(args)[:200]}: {exc}") from exc
        if proc.returncode != 0 and proc.stderr.startswith(b"bwrap: "):
            _refuse_if_moved(tree)  # bwrap names the folder by its path: moved meanwhile?
            raise _pin_unavailable(tree.bwrap, proc.stderr.decode(errors="replace").strip())
        return proc


def _commands(
    bwrap: str, program: str, args: Sequence[str], then: tuple[str, ...] | None
) -> list[str]:
    """What the sandbox runs: git itself (its first process), or with ``then`` a shell
    that runs both, the second only if the first succeeded."""
    if then is None:
        return [program, *hardened_args(args)]
    shell = sandbox_shell()
    if shell is None:
        raise _pin_unavailable(bwrap, f"no sh on PATH lies in {_SYSTEM_SAID}")
    words = [*hardened_args(args), *hardened_args(then)]
    odd = [word for word in words if not _SHELL_SAFE.fullmatch(word)]
    if odd:  # a caller's bug: text of a run's (a commit message) travels on stdin or in env
        raise ValueError(f"not kodo's own constant arguments, refused in a shell: {odd!r:.200}")
    first = shlex.join([program, *hardened_args(args)])
    return [shell, "-c", f"{first} && exec {shlex.join([program, *hardened_args(then)])}"]


_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./^{}()~-]+")
"""The characters of the git arguments kodo puts on a shell's command line (its own
constants: subcommands, options, ``HEAD^{commit}``): nothing a shell reads specially."""


def _refuse_if_moved(tree: Worktree) -> None:
    """WorktreeTampered if the folder's name no longer leads to the folder opened: bwrap,
    binding the descriptor, looks up the path it has for it, and another run's agent
    that moved the folder aside meanwhile made it fail ("Can't get type of source"),
    which is the tampering rule, not a missing bubblewrap."""
    try:
        os.close(open_folder(tree.path, tree.identity))
    except PointerRewritten as exc:
        raise WorktreeTampered(str(exc)) from exc


def _pin_unavailable(bwrap: str, why: str) -> PinUnavailable:
    return PinUnavailable(
        f"sandbox_required: bubblewrap ({bwrap}) cannot pin the worktree's folder for"
        f" kodo's own git: {why[:300]}; install bubblewrap (scripts/bootstrap does), or set"
        " KODO_SANDBOX=off to run git on the folder's name"
    )


def tree_git(
    tree: Worktree,
    *args: str,
    check: bool = True,
    stdin: bytes | None = None,
    writes: Writes = "tree",
    index_file: Path | None = None,
) -> str:
    """:func:`git` for a command that reads or writes the worktree's files (``writes``:
    what else it may write, :data:`Writes`)."""
    proc = _tree_run(tree, args, stdin=stdin, writes=writes, index_file=index_file)
    if check and proc.returncode != 0:
        raise _failed(args, proc)
    return proc.stdout.decode(errors="replace")


def tree_git_bytes(tree: Worktree, *args: str, writes: Writes = "tree") -> bytes:
    """:func:`tree_git`'s output as git wrote it (names in ``-z`` output, say, which are
    the filesystem's bytes)."""
    proc = _tree_run(tree, args, writes=writes)
    if proc.returncode != 0:
        raise _failed(args, proc)
    return proc.stdout


KODO_FOLDER_RULE = "kodo_folder"


def own_folder(path: Path) -> Path:
    """``path``, one of kodo's own folders (the workspaces folder and those beside it),
    made owner-only if missing; one that exists must be a folder of this process's user,
    not a link, else GitError under :data:`KODO_FOLDER_RULE` (a looser mode of its own,
    an older kodo's umask, is made 0700).

    Their names are derived, so with the workspaces folder in a shared one (``mktemp -d``
    under ``/tmp``) another local user could make them first: a ``.locks`` of theirs
    holding a link made a root worker truncate the file it named, and an ``.exec`` of
    theirs received every verification's copy of the repository; made with the umask,
    the worktrees were readable copies of a private repository (red-team helper-133)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        kind = "not a folder" if not stat.S_ISDIR(info.st_mode) else "a folder"
        raise GitError(
            f"{KODO_FOLDER_RULE}: {path} is {kind} of uid {info.st_uid}, not a folder of"
            " kodo's own user"
            f" (uid {os.geteuid()}): kodo keeps its worktrees, locks and checkouts only in"
            " folders it made; remove it, or set KODO_WORKSPACE_DIR elsewhere"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _beside(workspace_dir: Path, name: str) -> Path:
    """``<workspaces>.<name>``: one of kodo's folders, a sibling of the workspaces folder
    (so on its filesystem, and out of the daemon's reach)."""
    real = resolved(workspace_dir)
    return real.with_name(f"{real.name}.{name}")


def _runs_entries(root: Path, run_id: str) -> list[Path]:
    """The entries ``<run_id>.<random>`` of one of kodo's folders beside the workspaces."""
    return list(root.glob(f"{glob.escape(run_id)}.*"))


def _put_index(worktree: Worktree, source: Path) -> None:
    """``source`` made the run's index in one rename (a copy first: it may lie on another
    filesystem), never half written, its time kept (:func:`copy_index`)."""
    landing = worktree.gitdir / f"index.kodo-{secrets.token_hex(8)}"
    copy_index(source, landing)
    os.replace(landing, worktree.gitdir / "index")


def copy_index(source: Path, target: Path) -> None:
    """A copy of git's index that keeps its modification time, which git's racy-clean
    check reads: an entry whose file changed in the second the index was written is
    re-read, not taken as clean by its size and time. A copy stamped later hid an edit of
    the same size made in that second, from staging and from the next reset alike (a
    repair's fix of ``a + b`` to ``a * b``, lost; CI)."""
    shutil.copy2(source, target)


def lock_dir(workspace_dir: Path) -> Path:
    """``<workspaces>.locks``: a sibling of the workspaces folder, outside the daemon's reach."""
    return _beside(workspace_dir, "locks")


def lock_file(workspace_dir: Path, repo: Path) -> Path:
    """The file :func:`repo_lock` locks for ``repo``."""
    return lock_dir(workspace_dir) / f"{sha256_hex(str(resolved(repo)))[:16]}.lock"


@contextmanager
def repo_lock(workspace_dir: Path, repo: Path) -> Iterator[None]:
    """Serialise worktree bookkeeping per repository across worker processes.

    ``git worktree add/prune`` edit the repository's shared ``.git/worktrees``;
    concurrent runs on one repository would otherwise race ("failed to read
    .git/worktrees/..."). The lock files live beside the workspaces folder, not in it
    (the daemon may write there: an agent holding a lock would stall every run on the
    repository) nor in the user's repository.
    """
    path = lock_file(workspace_dir, repo)
    own_folder(path.parent)
    # never through a link, and never truncated: the lock is the open file, not its bytes
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


CHECKOUT_BYTES_RULE = "max_checkout_bytes"
CHECKOUT_FILES_RULE = "max_checkout_files"


@dataclass(frozen=True)
class CheckoutBounds:
    """The most a tree kodo checks out may hold: what a verification command's worktree
    may hold (KODO_EXEC_WORKTREE_BYTES, and its files at one per 4 KiB)."""

    max_bytes: int
    max_files: int

    @classmethod
    def of_worktree(cls, worktree_bytes: int) -> CheckoutBounds:
        return cls(worktree_bytes, max(1024, worktree_bytes // BYTES_PER_INODE))


BYTECODE_FOLDER = b"__pycache__"


@dataclass(frozen=True)
class TreeWeighing:
    """What ``git ls-tree`` said of a tree kodo is about to check out."""

    commit: str
    refusal: tuple[str, str] | None
    """(rule, detail) if the tree is past its bounds: it is never checked out."""
    carries_bytecode: bool
    """A ``__pycache__`` anywhere in the tree: Python would read its bytecode in place of
    the source beside it, so a command on it runs with bytecode hidden (PYCACHE_PREFIX)."""
    files: tuple[TreeFile, ...] | None
    """The tree's regular files (all of them unless refused; None if not kept), for the
    faithfulness check of its checkout (:func:`unfaithful_checkout`), which would list
    them once more."""


class TreeFile(NamedTuple):
    path: str
    blob: str
    size: int


_BOUNDED_BASES: Lru[tuple[str, CheckoutBounds], bool] = Lru(4096)
"""Commits found within bounds: runs on one base commit weigh it once per process."""


def checkout_refusal(repo: Path, commit: str, bounds: CheckoutBounds) -> tuple[str, str] | None:
    """(rule, detail) if ``commit``'s tree holds more bytes or files than ``bounds``; a
    commit found within them is remembered by id (its tree never changes)."""
    if not _OBJECT_ID.fullmatch(commit):
        raise GitError(f"not a commit id: {commit!r}")
    if _BOUNDED_BASES.get((commit, bounds)) is not None:
        return None
    refusal = weigh_checkout(repo, commit, bounds, keep_files=False).refusal
    if refusal is None:
        _BOUNDED_BASES.put((commit, bounds), True)
    return refusal


def weigh_checkout(
    repo: Path, commit: str, bounds: CheckoutBounds, *, keep_files: bool = True
) -> TreeWeighing:
    """``commit``'s tree weighed against ``bounds``, read from ``git ls-tree -r -l`` as it
    comes (no blob is read, nothing is checked out).

    Zeros compress a thousandfold: a 96 kB repository held a 96 MB blob and 100 kB of
    objects 40,000 files, each checked out twice (the worktree, the private checkout)
    with no bound but git's timeout (red-team helper-116). A tree past the bound is
    refused before a byte is written. ``keep_files``: keep the regular files' listing
    (:attr:`TreeWeighing.files`), for a checkout judged faithful by it."""
    listing = HardenedGit(repo, timeout_s=GIT_TIMEOUT_S).open(
        ["ls-tree", "-r", "-l", "-z", "--full-tree", commit]
    )
    total = files = 0
    rest = b""
    attributes: list[tuple[str, int]] = []  # the tree's .gitattributes: (blob, size)
    bytecode = False
    regular: list[TreeFile] = []
    found: tuple[str, str] | None = None
    try:
        assert listing.stdin is not None  # (opened with pipes)
        assert listing.stdout is not None
        listing.stdin.close()  # (ls-tree reads nothing)
        while found is None and (chunk := listing.stdout.read(1 << 16)):
            *records, rest = (rest + chunk).split(b"\0")
            for record in records:
                files += 1
                head, _, name = record.partition(b"\t")
                fields = head.split()
                size = int(fields[-1]) if fields and fields[-1].isdigit() else 0
                total += size
                *folders, base = name.split(b"/")
                if len(fields) == 4 and fields[0] in _REGULAR:
                    if keep_files:
                        regular.append(TreeFile(os.fsdecode(name), fields[2].decode(), size))
                    if base == b".gitattributes":
                        attributes.append((fields[2].decode("ascii", "replace"), size))
                bytecode = bytecode or BYTECODE_FOLDER in folders or base == BYTECODE_FOLDER
            if total > bounds.max_bytes:
                found = (
                    CHECKOUT_BYTES_RULE,
                    f"{CHECKOUT_BYTES_RULE}: {commit}'s tree holds more than"
                    f" {bounds.max_bytes} bytes (KODO_EXEC_WORKTREE_BYTES): never checked out",
                )
            elif files > bounds.max_files:
                found = (
                    CHECKOUT_FILES_RULE,
                    f"{CHECKOUT_FILES_RULE}: {commit}'s tree holds more than"
                    f" {bounds.max_files} files (one per 4 KiB of KODO_EXEC_WORKTREE_BYTES):"
                    " never checked out",
                )
    finally:
        listing.kill()
        listing.wait(timeout=GIT_TIMEOUT_S)
        if listing.stdout is not None:
            listing.stdout.close()
    refusal = found or _expanding_attributes(repo, commit, attributes)
    return TreeWeighing(commit, refusal, bytecode, tuple(regular) if keep_files else None)


MAX_ATTRIBUTES_READ = 1 << 20
"""The most bytes of a tree's ``.gitattributes`` files the checkout bound reads."""
_EXPANDING = re.compile(rb"(?<![-!\w])(?:ident|working-tree-encoding)(?![-\w])")


def _expanding_attributes(
    repo: Path, commit: str, attributes: list[tuple[str, int]]
) -> tuple[str, str] | None:
    """``worktree_filter`` if a ``.gitattributes`` of the tree sets an attribute that makes
    a checkout larger than the blobs it writes: ``ident`` (each ``$Id$`` grows elevenfold)
    and ``working-tree-encoding`` (UTF-32: fourfold); an 11 kB repository had put 98 MB
    into a worktree bounded at 64 MB, judged only afterwards (red-team helper-117). An
    end-of-line conversion at most doubles a file and is left to the faithfulness check."""
    if not attributes:
        return None
    if sum(size for _, size in attributes) > MAX_ATTRIBUTES_READ:
        return (
            UNFAITHFUL_RULE,
            f"{UNFAITHFUL_RULE}: {commit}'s .gitattributes hold more than"
            f" {MAX_ATTRIBUTES_READ} bytes: never checked out",
        )
    batch = "".join(f"{blob}\n" for blob, _ in attributes).encode()
    done = run_git(repo, ["cat-file", "--batch"], stdin=batch, timeout_s=GIT_TIMEOUT_S)
    if done.returncode != 0 or _EXPANDING.search(done.stdout) is not None:
        return (
            UNFAITHFUL_RULE,
            f"{UNFAITHFUL_RULE}: {commit}'s .gitattributes set ident or working-tree-encoding,"
            " which write more than the tree holds: never checked out",
        )
    return None


class UnfaithfulCheckout(GitError):
    """A checkout of the judged commit is not its blobs (rule ``worktree_filter``)."""

    def __init__(self, paths: list[str]) -> None:
        shown = ", ".join(shown_path(p) for p in paths[:20])
        super().__init__(
            f"{UNFAITHFUL_RULE}: checking out the judged commit wrote other bytes than it"
            f" holds ({shown}): a .gitattributes conversion such as working-tree-encoding or"
            " ident; the command would run what nobody judged"
        )
        self.paths = paths


def exec_root(workspace_dir: Path) -> Path:
    """``<workspaces>.exec``: where verification commands get their private checkouts, a
    sibling of the workspaces folder and so outside the daemon's reach."""
    return _beside(workspace_dir, "exec")


@dataclass(frozen=True)
class PrivateCheckout:
    """A verification command's checkout: files only, with an index of its own beside it
    (``<run>.index``) and the repository's git dir, so git reads nothing in the folder."""

    path: Path
    git_dir: Path
    index: Path


def private_index(workspace_dir: Path, run_id: str) -> Path:
    """The index a run's private checkout is made with, beside it in ``<workspaces>.exec``."""
    return exec_root(workspace_dir) / f"{run_id}.index"


def drop_private_index(workspace_dir: Path, run_id: str) -> None:
    """Remove a private checkout's index and the lock a git killed while writing it left
    (it would refuse every later checkout of the run: nothing else takes that lock)."""
    index = private_index(workspace_dir, run_id)
    index.unlink(missing_ok=True)
    index.with_name(f"{index.name}.lock").unlink(missing_ok=True)


@contextmanager
def private_checkout(
    repo: Path,
    workspace_dir: Path,
    run_id: str,
    commit: str,
    *,
    timed: Callable[[], AbstractContextManager[None]] = nullcontext,
    weighed: TreeWeighing | None = None,
) -> Iterator[Path]:
    """A checkout of ``commit`` that only kodo can write, for one verification command.

    The run's worktree lies in the daemon's one writable folder: another run's agent
    could rewrite it while the command runs, and the command would verify what nobody
    judged. This checkout is made from the repository's objects (read-only to the
    daemon) at the judged commit and removed afterwards; one a crashed delivery left is
    removed first.

    It is no worktree of the repository's: one ``git checkout <commit> -- .`` writes the
    files, told the repository's git dir and an index of the checkout's own, and nothing
    is registered. ``git worktree add`` reads every worktree the repository has, and the
    prune its removal needs does again, both under the repository's lock: with 1,000
    runs in flight on one repository each cost some 30 ms (measured, git 2.39), and
    every run on the repository waited for them. The command loses nothing: the
    sandbox never showed it the repository's git dir, which a worktree's ``.git`` names.

    ``timed``: entered around making the checkout and around removing it (the step's
    git Stopwatch), not around what the caller does with it. ``weighed``: the commit's
    :func:`weigh_checkout`, whose listing the faithfulness check reads instead of its own.
    """
    if weighed is not None and (weighed.commit != commit or weighed.refusal is not None):
        raise GitError(f"the weighing of {weighed.commit} does not let {commit} be checked out")
    path = own_folder(exec_root(workspace_dir)) / run_id
    with timed():
        drop_private_checkout(repo, workspace_dir, path)
        path.mkdir()
    checkout = PrivateCheckout(path, repo / ".git", private_index(workspace_dir, run_id))
    try:
        with timed():
            made = _private_git(checkout, ["checkout", "-q", commit, "--", "."])
            if made.returncode != 0:
                said = made.stderr.decode(errors="replace").strip()
                raise GitError(f"git checkout {commit} into {path}: {said}")
            off = unfaithful_checkout(checkout, commit, weighed.files if weighed else None)
        if off:
            raise UnfaithfulCheckout(off)
        yield path
    finally:
        try:
            with timed():
                drop_private_checkout(repo, workspace_dir, path)
        except GitError as exc:  # the step's outcome stands; the next delivery or cleanup retries
            log.warning("private_checkout.not_removed", path=str(path), error=str(exc))


def _private_git(
    checkout: PrivateCheckout, args: list[str], *, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run_git(
        checkout.path,
        args,
        stdin=stdin,
        timeout_s=GIT_TIMEOUT_S,
        git_dir=checkout.git_dir,
        index_file=checkout.index,
    )


def drop_private_checkout(repo: Path, workspace_dir: Path, path: Path) -> None:
    """Remove a private checkout and its index (nothing if there is none). One an earlier
    kodo made as a registered worktree (its ``.git`` a file) is pruned from git's records."""
    drop_private_index(workspace_dir, path.name)
    if not (path.exists() or path.is_symlink()):
        return
    registered = not path.is_symlink() and (path / ".git").is_file()
    remove_worktree_dir(path, exec_root(workspace_dir))
    if registered:
        with repo_lock(workspace_dir, repo):
            confined_git_dir(repo)
            git(repo, "worktree", "prune")


def ensure_worktree(
    repo: Path, workspace_dir: Path, run_id: str, base: str, *, bwrap: str | None = "bwrap"
) -> Worktree:
    """A worktree on branch ``kodo/<run_id>`` at ``base`` (a commit); reused if it exists.

    kodo registers it itself (:func:`_register`), exactly as ``git worktree add`` would
    lay it out, and checks it out with its own pinned git. ``git worktree add -b`` reads
    every worktree the repository has registered, and its ``git branch`` does again: on
    one repository with 1,000 runs in flight it cost 106 ms of CPU per run, against
    7 ms for the same registration and checkout made here. An existing worktree whose
    ``.git`` pointer or folder was tampered with is refused (WorktreeTampered); one
    whose checkout never finished is made again. Each is registered locked
    (:func:`unlock_registration` says why).
    """
    branch = run_branch(run_id)
    path = workspace_dir / run_id
    if (path / ".git").exists():
        # Another run's agent can write here: a pointer it rewrote would make git read a
        # git dir of its choosing (its config, its HEAD). Fail closed.
        tree = open_worktree(path, repo, bwrap=bwrap)  # a later delivery: no git process
        if not _drop_if_unfinished(repo, workspace_dir, tree):
            return tree
    workspace_dir.parent.mkdir(parents=True, exist_ok=True)
    own_folder(workspace_dir)
    aside: list[Path] = []
    try:
        with repo_lock(workspace_dir, repo):
            confined_git_dir(repo)  # its records are written through .git/worktrees
            admin = _register(repo, workspace_dir, path, branch, base, aside)
            _check_out_into_place(repo, workspace_dir, path, admin, bwrap)
    finally:
        _empty_trash(workspace_dir, aside)
    return open_worktree(path, repo, bwrap=bwrap)


def trash_root(workspace_dir: Path) -> Path:
    """``<workspaces>.trash``: where a leftover folder is moved, in one rename, out of the
    way of a registration that holds the repository's lock; a sibling of the workspaces
    folder, out of the daemon's reach."""
    return _beside(workspace_dir, "trash")


def _set_aside(path: Path, workspace_dir: Path, aside: list[Path]) -> None:
    """Move ``path`` (a folder an agent may have filled with millions of files, or a link
    in its place) into :func:`trash_root` to be removed once the repository's lock is
    released (:func:`_empty_trash`): removed here, it held every run of the repository
    for as long as ``rm`` took (up to GIT_TIMEOUT_S). Removed in place where the rename
    cannot cross (the trash on another filesystem)."""
    trash = own_folder(trash_root(workspace_dir))
    moved = trash / f"{path.name}.{secrets.token_hex(8)}"
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        remove_worktree_dir(path, path.parent)
        return
    aside.append(moved)


def drop_run_leftovers(workspace_dir: Path, run_id: str) -> None:
    """Remove what a run's killed deliveries left in kodo's folders beside the
    workspaces: a quarantine (which may hold a refused blob), set-aside folders (a
    ``worktree.trash_left`` among them) and a checkout its timeout cut short in the
    stage, once the run is done with."""
    for left in _runs_entries(quarantine_root(workspace_dir), run_id):
        shutil.rmtree(left, ignore_errors=True)
    trash = trash_root(workspace_dir)
    for left in _runs_entries(trash, run_id):
        remove_worktree_dir(left, trash)
    staged = stage_root(workspace_dir) / run_id  # a checkout cut short by its timeout
    if staged.exists() or staged.is_symlink():
        remove_worktree_dir(staged, staged.parent)


def _empty_trash(workspace_dir: Path, aside: list[Path]) -> None:
    """Remove what :func:`_set_aside` moved; one that cannot be removed stays in the trash
    (logged), out of everyone's way."""
    for moved in aside:
        try:
            remove_worktree_dir(moved, trash_root(workspace_dir))
        except GitError as exc:
            log.warning("worktree.trash_left", path=str(moved), error=str(exc)[:300])


def stage_root(workspace_dir: Path) -> Path:
    """``<workspaces>.stage``: where a run's worktree is checked out before it is moved into
    the workspaces folder; a sibling of it (as ``.exec`` is), out of the daemon's reach."""
    return _beside(workspace_dir, "stage")


def _check_out_into_place(
    repo: Path, workspace_dir: Path, path: Path, admin: Path, bwrap: str | None
) -> None:
    """Make the run's folder, its ``.git`` pointer and its files where the daemon cannot
    reach them, then move the finished folder to ``path`` in one rename.

    Checked out in the daemon's folder, the files were another run's agent's to race: a
    FIFO it made at ``.gitattributes`` right after the folder appeared (git reads that
    file in the worktree when the commit has none) held kodo's checkout, and the
    repository's lock, until GIT_TIMEOUT_S, 11 times of 11 (a red-team pass). When the
    stage is on another filesystem (the workspaces folder a volume of its own) the
    folder is made in place, as before."""
    staged = own_folder(stage_root(workspace_dir)) / path.name
    _write_pointer(staged, admin)
    checkout_head(Worktree(staged, admin, folder_identity(staged), bwrap))
    try:
        os.rename(staged, path)
        return
    except OSError as exc:
        moved = exc
    remove_worktree_dir(staged, staged.parent)
    if moved.errno != errno.EXDEV:  # a name another run's agent put there meanwhile
        raise _taken(path, moved) from moved
    try:
        _write_pointer(path, admin)
    except OSError as exc:
        raise _taken(path, exc) from exc
    checkout_head(open_worktree(path, repo, bwrap=bwrap))


def _taken(path: Path, exc: OSError) -> WorktreeTampered:
    return WorktreeTampered(f"{RULE}: {path} was taken while kodo registered it ({exc.strerror})")


def _registration(repo: Path, path: Path) -> tuple[Path, Path]:
    """Where git keeps its record of the worktree ``path`` (named after the folder, as
    ``git worktree add`` names it), and the ``.git`` that record names."""
    admin = resolved(repo / ".git" / "worktrees") / path.name
    return admin, resolved(path.parent) / path.name / ".git"


def _register(
    repo: Path, workspace_dir: Path, path: Path, branch: str, base: str, aside: list[Path]
) -> Path:
    """Record a linked worktree at ``path`` as ``git worktree add --lock`` does
    (gitrepository-layout: ``worktrees/<id>/{locked,commondir,HEAD,gitdir}``), its HEAD
    on ``branch``, made at ``base`` unless an earlier delivery made it; return the
    record's folder. The worktree's own folder is made after. Called under the
    repository's lock."""
    admin, dotgit = _registration(repo, path)
    _clear_unfinished(workspace_dir, path, admin, dotgit, aside)
    _make_branch(repo, branch, base)
    admin.parent.mkdir(exist_ok=True)
    admin.mkdir()
    # locked first: a prune meanwhile (the user's own) keeps a record without gitdir yet
    (admin / "locked").write_text(f"kodo run {path.name}", encoding="utf-8")
    (admin / "commondir").write_text("../..\n", encoding="utf-8")
    (admin / "HEAD").write_text(f"ref: refs/heads/{branch}\n", encoding="utf-8")
    (admin / "gitdir").write_text(f"{dotgit}\n", encoding="utf-8")
    return admin


def _write_pointer(path: Path, admin: Path) -> None:
    """Make the worktree's folder (not there: cleared before) and its ``.git`` pointer,
    written in the folder just made, never through a link put in its place."""
    os.mkdir(path)
    folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        pointer = os.open(
            ".git", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder
        )
        try:
            os.write(pointer, f"gitdir: {admin}\n".encode())
        finally:
            os.close(pointer)
    finally:
        os.close(folder)


def _clear_unfinished(
    workspace_dir: Path, path: Path, admin: Path, dotgit: Path, aside: list[Path]
) -> None:
    """Clear what an earlier registration of this run left unfinished (a delivery killed
    in it): the folder, which has no ``.git`` pointer (or it would have been reused), is
    set aside, and git's record of it removed. A record by that name for another folder
    is refused."""
    staged = stage_root(workspace_dir) / path.name
    if staged.exists() or staged.is_symlink():
        _set_aside(staged, workspace_dir, aside)
    if path.exists() or path.is_symlink():
        _set_aside(path, workspace_dir, aside)
    if not admin.exists():
        return
    try:
        recorded = read_plain_text(admin / "gitdir").strip()
    except FileNotFoundError:
        recorded = ""  # made up to its gitdir, never further: ours
    if not str(dotgit).startswith(recorded):  # a gitdir cut short is a prefix of ours
        raise GitError(f"{admin} is git's record of another worktree ({recorded[:300]})")
    shutil.rmtree(admin)


def _make_branch(repo: Path, branch: str, base: str) -> None:
    """``refs/heads/<branch>`` at ``base``, made only if it does not exist yet (an earlier
    delivery's is kept, as ``git worktree add <path> <branch>`` kept it)."""
    ref = f"refs/heads/{branch}"
    made = _run(
        repo,
        ["update-ref", "-m", f"branch: Created from {base}", ref, f"{base}^{{commit}}", ""],
        config=_IDENTITY,
    )
    if made.returncode == 0:
        return
    if git(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False).strip():
        return
    raise _failed(["update-ref", ref, base], made)


def forget_registration(repo: Path, worktree: Path) -> None:
    """Drop git's record of ``worktree``, which kodo is done with (its folder removed): kodo's
    own record (named after the folder, naming it back) is removed, even if another run's
    agent made a folder there again; one an older kodo had ``git worktree add`` make is
    unlocked and pruned (a prune reads every record). Nothing is removed through a git
    dir that is not the repository's own (GitDirRefused)."""
    confined_git_dir(repo)
    admin, dotgit = _registration(repo, worktree)
    try:
        recorded = read_plain_text(admin / "gitdir").strip()
    except (OSError, UnicodeDecodeError):
        recorded = None
    if recorded == str(dotgit):  # kodo is done with the folder, whatever is there now
        # unlocked first: cut short after, the rest is a record git's own prune drops
        (admin / "locked").unlink(missing_ok=True)
        shutil.rmtree(admin)
        return
    unlock_registration(repo, worktree)
    git(repo, "worktree", "prune")


def _drop_if_unfinished(repo: Path, workspace_dir: Path, tree: Worktree) -> bool:
    """Remove a worktree whose checkout never finished (a delivery killed in it, or by its
    timeout: a large repository's checkout can outlast it), and git's record of it;
    whether it was removed.

    git writes the git dir's ``index`` only at the end of the checkout, so a worktree
    without one holds part of the base at best: a plan made on it, and the symlink check
    of the base (which resolves links on disk, and remembers a clean commit), would see
    a tree the run never had. Checked again under the repository's lock, which a
    delivery still checking out holds.
    """
    if (tree.gitdir / "index").exists():
        return False
    aside: list[Path] = []
    try:
        with repo_lock(workspace_dir, repo):
            if (tree.gitdir / "index").exists():
                return False
            log.warning("worktree.unfinished_removed", path=str(tree.path))
            _set_aside(tree.path, workspace_dir, aside)
            forget_registration(repo, tree.path)
    finally:
        _empty_trash(workspace_dir, aside)
    return True


def unlock_registration(repo: Path, worktree: Path) -> None:
    """Let ``git worktree prune`` forget ``worktree`` (once its folder is gone).

    kodo registers each run's worktree locked: any run's agent may delete another run's
    ``.git``, and the next prune (any run's private checkout, cleanup or retry makes one)
    would then drop that run's git dir from the repository for good. The lock is found
    by git's own record of the folder (never the folder's ``.git``) and removed only
    when kodo itself is done with the worktree.
    """
    records = repo / ".git" / "worktrees"
    wanted = str(resolved(worktree.parent) / worktree.name / ".git")
    if not records.is_dir():
        return
    for admin in records.iterdir():
        try:
            if read_plain_text(admin / "gitdir").strip() == wanted:
                (admin / "locked").unlink(missing_ok=True)
        except (OSError, UnicodeDecodeError):
            continue


def _head_branch(tree: Worktree) -> str | None:
    """The branch the worktree's HEAD names, read from its verified git dir, when HEAD is
    a plain symbolic ref; None otherwise (detached)."""
    try:
        head = read_plain_text(tree.gitdir / "HEAD")
    except (OSError, UnicodeDecodeError):
        return None
    first, _, rest = head.partition("\n")
    if not first.startswith("ref: refs/heads/") or rest.strip():
        return None
    return first.removeprefix("ref: refs/heads/")


def head_trailer(worktree: Worktree, key: str) -> str | None:
    """HEAD's ``key`` trailer: the last line naming it (the trailers close the message;
    a line before them is not kodo's)."""
    body = git(worktree, "log", "-1", "--format=%B")
    found = None
    for line in body.splitlines():
        if line.startswith(f"{key}: "):
            found = line.split(": ", 1)[1].strip()
    return found


def reset_worktree(worktree: Worktree) -> None:
    """Drop everything HEAD does not hold: an agent's edits, its new files, ignored ones too.

    Always a reset and a clean, never a ``git status`` first: a command can leave
    hundreds of thousands of long names, and reading them all into the worker to learn
    that something changed cost it hundreds of MB. Never called while a call may still
    be editing the worktree (see ApplyPatchST).
    """
    with pinned(worktree) as folder:
        remove_special_files(folder)  # a FIFO or socket: git would neither see nor clean it
    checkout_head(worktree, then=("clean", "-ffdqx"))  # -ff: nested repositories too


def checkout_head(worktree: Worktree, *, then: tuple[str, ...] | None = None) -> None:
    """The worktree's index and tracked files made HEAD's again, as ``git reset --hard``
    would, without moving a ref (``read-tree``; ``reset`` wrote the branch's ref and
    reflog in the repository's shared git dir). The index is written last.

    ``read-tree -u`` writes and unlinks the worktree's files by name: another run's agent
    that swaps a folder for a link mid-way sends those writes through it, and a red-team
    pass had them rewrite the run's git dir (its ``commondir``, so kodo's next git read a
    repository of the agent's). So nothing is writable to it but the folder and a copy of
    the index in a fresh folder of kodo's (a random name, out of the daemon's reach),
    which kodo moves into the run's git dir once git is done.

    ``then``: a git command run next in the same sandbox, on that fresh index (a reset's
    clean), if the checkout succeeded."""
    current = worktree.gitdir / "index"
    if (worktree.gitdir / "index.lock").exists():
        raise IndexLocked(
            f"worktree_index_lock: {worktree.gitdir / 'index.lock'} was left by a git that"
            " never finished; remove it once no git runs on this worktree"
        )
    scratch = _index_scratch()
    try:
        if current.exists():  # read-tree --reset needs it: it removes what it tracked
            for part in [current, *worktree.gitdir.glob("sharedindex.*")]:
                copy_index(part, scratch / part.name)
        args = ("read-tree", "-u", "--reset", "--no-recurse-submodules", "HEAD")
        proc = _tree_run(worktree, args, writes="tree", index_file=scratch / "index", then=then)
        if proc.returncode == 0 or (then is not None and (scratch / "index").exists()):
            # (``then`` failed, or the checkout did and left the copy as it was: the
            # index is what a checkout followed by a failed clean left, as two calls did)
            _put_index(worktree, scratch / "index")
        if proc.returncode != 0:
            raise _failed(args if then is None else (*args, "&&", *then), proc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _index_scratch() -> Path:
    """A fresh folder only kodo can reach, under a name nobody can guess."""
    path = Path(tempfile.gettempdir()) / f"kodo-index-{secrets.token_hex(16)}"
    path.mkdir(mode=0o700)
    return path


def quarantine_root(workspace_dir: Path) -> Path:
    """``<workspaces>.objects``: where the objects of a change not judged yet are kept, a
    sibling of the workspaces folder, out of the daemon's reach (which reads the
    repository's own store)."""
    return _beside(workspace_dir, "objects")


@contextmanager
def quarantined(worktree: Worktree, workspace_dir: Path) -> Iterator[Worktree]:
    """``worktree`` with git's new objects, and the index it stages into, kept in a fresh
    folder of kodo's until :func:`admit` moves the judged change into the repository's
    store and the run's git dir; whatever is not admitted is deleted when the block ends.

    ``git add`` reads each file by name, and another run's agent that swaps a folder for
    a link while git reads it has git hash whatever the link leads to (a red-team pass:
    a credentials file the repository's config includes). The judgement refuses such a
    change (``worktree_filter``), but git had written the object into the repository's
    store, which the daemon's sandbox may read: the agent could have read it back. Only
    a change that passed the judgement reaches the store now. The index stays with the
    objects it names: a delivery killed mid-judgement leaves the run's own index naming
    only objects the store holds, so the next one stages again (an index naming deleted
    objects failed every redelivery, a red-team pass). A crashed delivery's folder is
    removed by the run's next one."""
    root = own_folder(quarantine_root(workspace_dir))
    for left in _runs_entries(root, worktree.path.name):
        shutil.rmtree(left, ignore_errors=True)
    folder = root / f"{worktree.path.name}.{secrets.token_hex(8)}"
    folder.mkdir(mode=0o700)
    try:
        current = worktree.gitdir / "index"
        if current.exists():  # git reads a split index's shared part from the git dir
            copy_index(current, folder / "index")
        yield replace(worktree, quarantine=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def admit(worktree: Worktree, blobs: Sequence[str]) -> int:
    """Move the judged change out of ``worktree``'s quarantine: the objects ``blobs``
    names into the repository's store (one there already is kept), then the index into
    the run's git dir; how many objects. Only those: git may have hashed more than it
    staged (a file swapped for a folder between its passes), and nothing unjudged may
    reach the store. A blob git packed (a file past ``core.bigFileThreshold``) brings
    its pack, index last, so git never sees an index without its pack."""
    if worktree.quarantine is None:
        return 0
    confined_git_dir(worktree.common.parent)  # written outside any sandbox: its own store
    store = resolved(worktree.common / "objects")
    wanted = set(blobs)
    admitted = 0
    for blob in sorted(wanted):
        loose = worktree.quarantine / blob[:2] / blob[2:]
        if loose.is_file():
            admitted += _admit(loose, store / blob[:2] / blob[2:], store)
            wanted.discard(blob)
    packs = worktree.quarantine / "pack"
    if wanted and packs.is_dir():
        for part in sorted(packs.iterdir(), key=lambda p: (p.suffix == ".idx", p.name)):
            admitted += _admit(part, store / "pack" / part.name, store)
    _put_index(worktree, worktree.quarantine / "index")
    return admitted


def _admit(source: Path, target: Path, store: Path) -> int:
    """``source`` at ``target`` (a hard link, or a copy across filesystems), read-only as
    git keeps objects, unless ``target`` exists (an object's name is its content). A
    folder made for it takes the store's own mode (a group-shared repository's
    ``02775``), as git makes them."""
    if target.exists() or not source.is_file() or source.is_symlink():
        return 0
    if not target.parent.is_dir():
        target.parent.mkdir(exist_ok=True)
        os.chmod(target.parent, stat.S_IMODE(store.stat().st_mode))
    landing = target.with_name(f"tmp_kodo_{secrets.token_hex(8)}")
    try:
        os.link(source, landing)
    except OSError:
        shutil.copyfile(source, landing)
    os.chmod(landing, 0o444)
    os.replace(landing, target)
    return 1


def stage_edits(
    worktree: Worktree, *, most: int | None = None, most_bytes: int | None = None
) -> list[IndexChange]:
    """Stage everything the agent left in the worktree and return what git says changed.

    ``--force`` stages ignored files too: a file the agent wrote is judged against the
    plan whether or not a ``.gitignore`` would hide it (a fresh worktree holds none).
    ``most``: past that many changes, :class:`TooManyChanges`; ``most_bytes``: a binary
    file's lines are not counted past that many of its bytes (see :func:`_changes`).
    """
    tree_git(worktree, "add", "--all", "--force", "--", ".", writes="objects")
    return staged_changes(worktree, most=most, most_bytes=most_bytes)


_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_OWN_REVISIONS = frozenset({"HEAD", "HEAD~1"})


@dataclass(frozen=True)
class Patch:
    """A change as ``patch.diff`` (``git apply`` replays it) and as ``git diff --stat``
    shows it (what DecideST shows the agent), both from one git process."""

    diff: bytes
    stat: str


def _patch(worktree: Worktree, old: str, new: str, *, max_bytes: int) -> Patch:
    """The change from ``old`` to ``new`` (``HEAD``, ``HEAD~1`` or object ids, nothing
    else: each is taken as a revision, never as an option or a path) as git shows text
    by its content: the repository's ``.gitattributes`` cannot hide a text file behind
    a binary patch (:func:`shared.gitcmd.attribute_free`); a file with a NUL byte is
    still a binary patch. The patch names no revision, so naming HEAD here or its id
    gives the same bytes, without a git process to read the id first; its stat comes
    in the same output, before it (:func:`split_stat`).

    Read as git writes it, at most ``max_bytes`` (the policy's ``max_patch_bytes``):
    past them :class:`PatchTooLarge`, and what git had not yet written is never held."""
    for revision in (old, new):
        if revision not in _OWN_REVISIONS and not _OBJECT_ID.fullmatch(revision):
            raise GitError(f"git diff {old} {new}: {revision!r} is not HEAD, HEAD~1 or an id")
    # the repository's info/attributes, which git reads even here, as it is now
    attributes = info_attributes_refusal(worktree.common)
    if attributes is not None:
        raise GitDirRefused(attributes)
    args = ["diff", "--no-ext-diff", "--no-textconv", "--stat", "--binary", "--full-index"]
    with _streamed(worktree, [*args, "-M", old, new, "--"]) as git_diff:
        shown = git_diff.stdout.read(max_bytes + 1)
        if len(shown) > max_bytes:  # git is killed on the way out: nothing more is read
            raise PatchTooLarge(max_bytes)
        code = git_diff.wait()
    if code != 0:
        raise GitError(f"git diff {old} {new}: exit {code} (killed at its deadline?)")
    return split_stat(shown)


_PATCH_START = b"diff --git "


def split_stat(shown: bytes) -> Patch:
    """``git diff --stat --binary``'s output as its two parts: the stat (each line starts
    with a space: names are quoted, never broken over lines), a blank line, then the
    patch, which starts with ``diff --git``. Nothing at all is no change. Anything else
    is refused: kodo records the patch's sha256 and never guesses its first byte."""
    if not shown:
        return Patch(b"", "")
    stat, blank, diff = shown.partition(b"\n\n" + _PATCH_START)
    if not blank or not stat.startswith(b" "):
        raise GitError(f"git diff --stat --binary: no stat, then patch: {shown[:200]!r}")
    return Patch(_PATCH_START + diff, (stat + b"\n").decode(errors="replace"))


def staged_tree(worktree: Worktree) -> str:
    """The id of the tree the index holds (``git write-tree``)."""
    return git(worktree, "write-tree").strip()


def staged_patch(worktree: Worktree, *, max_bytes: int, tree: str | None = None) -> Patch:
    """The staged change as a patch (``git apply`` can replay it): ``patch.diff``.
    ``tree``: the index's tree, when the caller has it (:func:`staged_tree`)."""
    new = tree if tree is not None else staged_tree(worktree)
    return _patch(worktree, "HEAD", new, max_bytes=max_bytes)


def bound_change_since(worktree: Worktree, base: str, new: str, *, max_bytes: int) -> None:
    """Raise :class:`PatchTooLarge` if the change from ``base`` (an object id) to ``new``
    (the staged tree's id, or HEAD) passes ``max_bytes`` as a patch: a repair round is
    judged whole, its bytes too (each round under the bound, three rounds landed three
    times it: red-team helper-101). What git writes past the bound is never read."""
    _patch(worktree, base, new, max_bytes=max_bytes)


def committed_patch(worktree: Worktree, *, max_bytes: int) -> Patch:
    """The last commit's change, byte for byte what :func:`staged_patch` gave before it."""
    return _patch(worktree, "HEAD~1", "HEAD", max_bytes=max_bytes)


_DIFFSTATS: Lru[tuple[str, str], str] = Lru(1024)


def commit_diffstat(worktree: Worktree, commit: str) -> str:
    """``git diff --stat`` of ``commit`` against its parent, as DecideST shows the agent.

    Taken of the commit ApplyPatchST judged (an object id, whose content never changes),
    not of whatever HEAD is now, so it is remembered by id: DecideST builds its prompt
    again when its answer is collected (the op_key hashes the prompt), and that second
    build reads no git.
    """
    if not _OBJECT_ID.fullmatch(commit):
        raise GitError(f"not a commit id: {commit!r}")
    key = (str(worktree.gitdir), commit)
    remembered = _DIFFSTATS.get(key)
    if remembered is not None:
        return remembered
    shown = git(worktree, "diff", "--stat", f"{commit}~1", commit)
    _DIFFSTATS.put(key, shown)
    return shown


def commit_index(worktree: Worktree, message: str) -> str:
    """Commit what the index holds; return the new commit id, read in the same sandbox
    (the message, which holds the intent's words, goes on stdin, never on a command line)."""
    args = ("commit", "-q", "-F", "-")
    then = ("rev-parse", "--verify", "HEAD^{commit}")
    proc = _tree_run(worktree, args, stdin=message.encode(), writes="repository", then=then)
    if proc.returncode != 0:
        raise _failed((*args, "&&", *then), proc)
    said = proc.stdout.decode(errors="replace").split()
    if not said or not _OBJECT_ID.fullmatch(said[-1]):
        raise GitError(f"git commit: no commit id read back ({proc.stdout[-200:]!r})")
    return said[-1]


_CHANGES = ("diff", "--no-ext-diff", "--no-textconv", "--no-abbrev", "-M", "-C", "-z")


def staged_changes(
    worktree: Worktree, *, most: int | None = None, most_bytes: int | None = None
) -> list[IndexChange]:
    """What the index changes against HEAD, as git itself reports it.

    Status, both paths of renames and copies, old and new modes, line counts; for a
    symlink, its target read from the index blob and where the filesystem resolves it.
    """
    return _changes(worktree, "--cached", "HEAD", most=most, most_bytes=most_bytes)


def committed_changes(worktree: Worktree) -> list[IndexChange]:
    """What the worktree's last commit changed (a redelivery re-judges its own commit)."""
    return _changes(worktree, "HEAD~1", "HEAD")


def changes_since(worktree: Worktree, commit: str, *, staged: bool) -> list[IndexChange]:
    """What the index (``staged``) or HEAD changes against ``commit``: a repair's change is
    judged whole, from the commit the plan was approved against."""
    return _changes(worktree, "--cached", commit) if staged else _changes(worktree, commit, "HEAD")


class TooManyChanges(GitError):
    """More changes than the judge reads one by one (each may take a git process)."""

    def __init__(self, count: int, most: int) -> None:
        super().__init__(f"the change touches {count} files (more than {most} are not read)")
        self.count = count
        self.most = most


def _changes(
    worktree: Worktree, *spec: str, most: int | None = None, most_bytes: int | None = None
) -> list[IndexChange]:
    """The changes ``spec`` names, read for judging; past ``most`` of them,
    :class:`TooManyChanges` before any is read: a file git calls binary, or one whose
    disk bytes differ from its blob by line endings, costs a git process, and 10,000
    of them held a step for 111 s (250,000, one patch call's worth, about an hour).
    ``most_bytes``: how much of a binary file is read to count its lines (the policy's
    ``max_file_bytes``: a larger file is refused whatever its lines)."""
    changes = parse_raw_numstat(_listing(worktree, spec, most))
    links = None
    if any(change.new_mode == SYMLINK for change in changes):
        links = _tree_links(worktree, None if "--cached" in spec else spec[-1])
    # the blobs git counted the lines of (text) are read for their lone carriage returns;
    # those it did not (binary) are read for their line feeds, once, here
    texts = [c.new_blob for c in changes if c.new_mode != SYMLINK and _counts_lone_crs(c)]
    counted = [
        change if change.new_mode == SYMLINK else _lines_counted(worktree, change, most_bytes)
        for change in changes
    ]
    read = _read_blobs(worktree, texts)
    return [
        _with_link(links, change)
        if links is not None and change.new_mode == SYMLINK
        else _with_lone_carriage_returns(change, read)
        for change in counted
    ]


def _listing(worktree: Worktree, spec: Sequence[str], most: int | None) -> str:
    """git's listing of the changes ``spec`` names, read a chunk at a time and counted as
    it arrives (:class:`RawRecords`): past ``most`` records nothing more is kept, and
    :class:`TooManyChanges` says how many there were. Held whole, 20,000 files at 4 kB
    paths grew the worker by 199 MB before they were refused (a red-team pass)."""
    records = RawRecords()
    kept = bytearray()
    with _streamed(worktree, [*_CHANGES, "--raw", "--numstat", *spec]) as listing:
        while chunk := listing.stdout.read(1 << 16):
            records.feed(chunk)
            if most is None or records.count <= most:
                kept += chunk
            elif kept:
                kept = bytearray()  # counted from here on, never kept
        code = listing.wait()
    if code != 0:
        raise GitError(f"git diff --raw --numstat: exit {code} (killed at its deadline?)")
    if most is not None and records.count > most:
        raise TooManyChanges(records.count, most)
    return kept.decode(errors="replace")


def tree_names(worktree: Worktree, revision: str) -> Iterator[str]:
    """Each file's path in ``revision``'s tree (``HEAD`` or an object id), read from git
    a chunk at a time: a tree of any size is never held (a name is read as UTF-8, a
    byte that is not as U+FFFD, as every name kodo reads from git)."""
    if revision not in _OWN_REVISIONS and not _OBJECT_ID.fullmatch(revision):
        raise GitError(f"git ls-tree: {revision!r} is not HEAD, HEAD~1 or an id")
    with _streamed(worktree, ["ls-tree", "-r", "-z", "--name-only", revision]) as listing:
        partial = b""
        while chunk := listing.stdout.read(1 << 16):
            *names, partial = (partial + chunk).split(b"\0")
            for name in names:
                yield name.decode(errors="replace")
        code = listing.wait()
    if code != 0 or partial:
        raise GitError(f"git ls-tree {revision}: exit {code} (killed at its deadline?)")


def _counts_lone_crs(change: IndexChange) -> bool:
    return change.added is not None and change.status != "D" and change.new_mode in REGULAR_MODES


def _with_lone_carriage_returns(change: IndexChange, read: dict[str, BlobFacts]) -> IndexChange:
    """``change`` with each carriage return that no line feed follows counted as a line,
    and its new blob's size and declared encoding where the blob was read
    (:func:`_read_blobs`).

    git counts lines by LF alone, but a lone CR ends a line for Python (and for other
    readers): 5,000 statements joined by CRs were one line against ``max_lines``.
    """
    if not _counts_lone_crs(change) or change.new_blob not in read:
        return change
    facts = read[change.new_blob]
    return replace(
        change,
        added=(change.added or 0) + facts.lone_crs,
        new_size=facts.size,
        coding=facts.coding,
    )


def lone_carriage_returns(worktree: Worktree, blobs: list[str]) -> dict[str, int]:
    """Carriage returns no line feed follows, in each of ``blobs`` (object ids).

    Counted in the objects git holds, which are what is judged and committed, never in
    the files on disk: a daemon that swapped a file for a decoy while it was read and
    back before it was hashed had 3,000 lone CRs counted as none (a red-team pass). Read
    as one ``cat-file --batch`` stream, a chunk at a time: a file of any size costs no
    more memory than a chunk, and the whole read is bounded by GIT_TIMEOUT_S.
    """
    return {oid: facts.lone_crs for oid, facts in _read_blobs(worktree, blobs).items()}


class BlobFacts(NamedTuple):
    """What one read of a text blob tells (:func:`_read_blobs`)."""

    lone_crs: int
    size: int  # as git's ``--batch`` header gives it (what ``--batch-check`` would say)
    coding: str | None  # what its first two lines declare (shared.domain.source_encoding)


def _read_blobs(worktree: Worktree, blobs: list[str]) -> dict[str, BlobFacts]:
    """Each of ``blobs``: its lone carriage returns (:func:`lone_carriage_returns`), its
    size, and the encoding it declares."""
    wanted = list(dict.fromkeys(blobs))
    counts: dict[str, BlobFacts] = {}
    if not wanted:
        return counts
    with _streamed(worktree, ["cat-file", "--batch"], feed=_ids_fed(wanted)) as batch:
        for oid in wanted:
            counts[oid] = _lone_crs_in_next_blob(batch.stdout, oid)
    return counts


@dataclass(frozen=True)
class _Stream:
    """A git process whose output is read as it comes (see :func:`_streamed`)."""

    stdout: IO[bytes]
    proc: subprocess.Popen[bytes]

    def wait(self) -> int:
        """git's exit status, once its output was read to the end."""
        return self.proc.wait()


@contextmanager
def _streamed(worktree: Worktree, args: Sequence[str], *, feed: bytes = b"") -> Iterator[_Stream]:
    """``git <args>`` on the worktree's git dir, opened bare (no ``.gitattributes``
    read), its output read by the caller a chunk at a time; ``feed`` goes to its stdin
    from a thread of its own (a pipe fills both ways).

    Within GIT_TIMEOUT_S: git is killed at the deadline, so a read ends (short, and
    ``wait`` then says git did not succeed). However the block ends, git is killed and
    reaped: a caller that stopped reading early leaves nothing running."""
    hardened = HardenedGit(worktree.gitdir, timeout_s=GIT_TIMEOUT_S, objects=worktree.object_env())
    proc = hardened.open([*attribute_free(worktree.gitdir), *args])
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:  # pragma: no cover - HardenedGit.open gives pipes
        proc.kill()
        proc.wait()
        raise GitError(f"git {args[0]} started without its pipes")
    writer = threading.Thread(target=_feed_and_close, args=(stdin, feed), daemon=True)
    deadline = threading.Timer(GIT_TIMEOUT_S, proc.kill)
    if feed:
        writer.start()
    else:
        stdin.close()  # nothing to say: no thread for it
    deadline.start()
    try:
        yield _Stream(stdout, proc)
    finally:
        deadline.cancel()
        proc.kill()
        proc.wait()
        if feed:
            writer.join()
        stdout.close()


def _feed_and_close(pipe: IO[bytes], data: bytes) -> None:
    # git killed (its deadline) or ended early breaks the pipe: the reader says why
    with contextlib.suppress(OSError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _lone_crs_in_next_blob(stream: IO[bytes], oid: str) -> BlobFacts:
    """The next blob's lone carriage returns, its size and its declared encoding."""
    header = stream.readline(200).split()
    if (
        len(header) != 3
        or header[0].decode() != oid
        or header[1] != b"blob"
        or not header[2].isdigit()
    ):
        raise GitError(f"git cat-file --batch: no blob {oid} ({b' '.join(header)[:200]!r})")
    size = left = int(header[2])
    count, ended_with_cr = 0, False
    coding = None
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise GitError(f"git cat-file --batch: {oid} cut short (killed at its deadline?)")
        if left == size:  # (the first chunk: all of the blob, or a MiB of it)
            coding = declared_coding(chunk[:HEAD_BYTES], whole=size <= HEAD_BYTES)  # (all of it)
        left -= len(chunk)
        if ended_with_cr and chunk.startswith(b"\n"):
            count -= 1  # the last chunk's CR was a CRLF's
        count += chunk.count(b"\r") - chunk.count(b"\r\n")
        ended_with_cr = chunk.endswith(b"\r")
    stream.read(1)  # the line feed after each object
    return BlobFacts(count, size, coding)


def _lines_counted(worktree: Worktree, change: IndexChange, most_bytes: int | None) -> IndexChange:
    """``change`` with its lines counted where git counted none: a file it calls binary.

    numstat says ``-`` for a binary file, and a repository's ``.gitattributes`` can call
    any file binary (``big.py binary``): 5,000 lines of Python then counted as none
    against a 2,000-line ``max_lines`` (``--text`` does not override the attribute in
    git 2.39). And git calls a file binary for one NUL in its first 8,000 bytes, where
    bash looks at 80: a script of 5,000 lines with a NUL in a comment on its third
    line ran whole and counted as none (a red-team pass). So every line feed of the new
    blob counts as an added line, whatever git calls the file; past ``most_bytes`` of a
    file git calls binary, no more are read (:func:`_blob_lines`).
    """
    if change.added is not None or change.status == "D" or change.new_mode not in REGULAR_MODES:
        return change
    lines, size = _blob_lines(worktree, change.new_blob, most_bytes)
    return replace(change, added=lines, removed=0, new_size=size)


BINARY_PROBE = 8000
"""git's own test of a binary file: a NUL in its first 8,000 bytes (xdiff-interface.c)."""


def _blob_lines(
    worktree: Worktree, oid: str, most_bytes: int | None = None
) -> tuple[int, int | None]:
    """The lines of the blob ``oid`` (its line feeds, and one more for a last line
    without one) and its size (None: not read to its end). A blob git would call binary
    (a NUL in its first 8,000 bytes) is read to ``most_bytes`` at most: the caller
    refuses a larger one under ``max_file_bytes``, asking git for its size.

    Read a chunk at a time from ``git cat-file blob`` (bounded by GIT_TIMEOUT_S): the
    agent's file can be of any size, and read whole a 600 MB file of one line took
    1.2 GB of the worker's memory.
    """
    lines, seen, last, binary = 0, 0, b"\n", False
    with _streamed(worktree, ["cat-file", "blob", oid]) as blob:
        while chunk := blob.stdout.read(1 << 20):
            if seen < BINARY_PROBE and b"\0" in chunk[: BINARY_PROBE - seen]:
                binary = True
            seen += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if binary and most_bytes is not None and seen > most_bytes:
                return lines, None  # refused for its size: the count is not read further
        code = blob.wait()
    if code != 0:
        raise GitError(f"git cat-file blob {oid}: exit {code} (killed at its deadline?)")
    return lines + (1 if seen and last != b"\n" else 0), seen


REGULAR_MODES = ("100644", "100755")
_REGULAR = tuple(mode.encode() for mode in REGULAR_MODES)
UNFAITHFUL_RULE = "worktree_filter"


def staged_sizes(worktree: Worktree, changes: list[IndexChange]) -> dict[str, int]:
    """The size of each new regular file's blob, by blob id: what a line count read came
    with, the rest from one ``cat-file --batch-check`` (no blob is read)."""
    files = [c for c in changes if c.status != "D" and c.new_mode in REGULAR_MODES]
    sizes = {c.new_blob: c.new_size for c in files if c.new_size is not None}
    unsized = [c.new_blob for c in files if c.new_size is None]
    if unsized:
        sizes.update(_blob_sizes(_run(worktree, list(BLOB_SIZES), stdin=_ids_fed(unsized))))
    return sizes


def unfaithful_paths(
    worktree: Worktree, changes: list[IndexChange], sizes: Mapping[str, int] | None = None
) -> list[str]:
    """The changed files and symlinks whose bytes on disk are not the blob ``git add``
    staged.

    ``git add`` runs a file through the repository's ``.gitattributes`` (``ident``,
    ``working-tree-encoding``, end-of-line conversion) and git 2.39 cannot be told to
    ignore them. With ``*.py ident``, ``x = "$Id: ...hidden code... $"`` was staged as
    ``$Id$``: the judged commit and ``patch.diff`` held one thing and the verification
    command ran another, and ``git status`` called the worktree clean. And git reads each
    file by name: another run's agent that swaps a folder for a link while git reads it
    has git stage whatever the link leads to (a red-team pass staged a root-only file
    from outside). So each file is hashed as it is on disk (:func:`_blob_on_disk`, read
    below the verified folder, no link followed), and each link's target read from the
    link itself, and each must be the staged blob; the one conversion allowed is CRLF to
    LF (a repository with ``eol=crlf`` checks out CRLF). This runs before any other
    judgement, so nothing read from what is not on disk is shown anywhere (but the
    blobs' sizes, which the caller may bound first: each file is read whole to hash it).
    """
    kept = [c for c in changes if c.status != "D" and c.new_mode in (*REGULAR_MODES, SYMLINK)]
    # A name git printed with bytes that are not UTF-8 arrives here with U+FFFD in their
    # place: opening it would hash another file (a decoy of that name): fail closed.
    off = [c.path for c in kept if "\ufffd" in c.path]
    kept = [c for c in kept if "\ufffd" not in c.path]
    files = [c for c in kept if c.new_mode in REGULAR_MODES]
    links = [c for c in kept if c.new_mode == SYMLINK]
    if sizes is None:  # ``sizes``: :func:`staged_sizes`, when the caller has them
        sizes = staged_sizes(worktree, files)
    with pinned(worktree) as folder:
        for change in files:
            size = sizes[change.new_blob]
            on_disk = _blob_on_disk(folder, change.path, change.new_blob, size)
            if on_disk != change.new_blob and not _line_endings_only(
                worktree, change.path, change.new_blob, size
            ):
                off.append(change.path)
        off += [c.path for c in links if _link_on_disk(folder, c.path, c.new_blob) != c.new_blob]
    return off


def _link_on_disk(root: int, path: str, expected: str) -> str | None:
    """The blob id of the target of the symlink ``path`` below ``root`` (what git stages
    for a link), in the object format of ``expected``; None if it is no symlink."""
    try:
        target = link_below(root, path)
    except OSError:
        return None
    if target is None:
        return None
    digest = git_blob_digest(len(target), len(expected))
    digest.update(target)
    return str(digest.hexdigest())


BLOB_SIZES = ("cat-file", "--batch-check=%(objectname) %(objectsize)")


def _ids_fed(ids: list[str]) -> bytes:
    """Object ids as ``cat-file --batch`` and ``--batch-check`` read them, each once."""
    return b"".join(f"{oid}\n".encode() for oid in dict.fromkeys(ids))


def _blob_sizes(listed: subprocess.CompletedProcess[bytes]) -> dict[str, int]:
    """Object id to size, from ``cat-file --batch-check`` (:data:`BLOB_SIZES`)."""
    if listed.returncode != 0:
        raise GitError(f"git cat-file --batch-check: {listed.stderr[:200]!r}")
    sizes: dict[str, int] = {}
    for line in listed.stdout.decode(errors="replace").splitlines():
        oid, _, size = line.partition(" ")
        if not size.isdigit():
            raise GitError(f"git cat-file --batch-check: {line[:200]!r}")
        sizes[oid] = int(size)
    return sizes


def _blob_on_disk(root: int, path: str, expected: str, size: int) -> str | None:
    """The blob id of the bytes ``path`` holds below the folder ``root`` (what ``git
    hash-object --no-filters`` says of them), in the object format of ``expected``; None
    for anything but a regular file of the blob's ``size`` (not read at all then: a
    daemon's 16 TiB sparse file would have been read for hours), one that cannot be
    read, or one that grew or shrank while it was read.

    Hashed here, never by ``git hash-object --stdin-paths``: git C-unquotes a name that
    starts with ``"`` and drops a carriage return before the line feed, so it hashed
    another file than the one named (a red-team pass: ``"t"/test_add.py``, re-encoded by
    a ``working-tree-encoding``, was judged faithful by its decoy ``t``, and the
    verification passed a test that fails on the judged bytes).
    """
    try:
        fd = regular_below(root, path)
    except OSError:
        return None
    if fd is None:
        return None
    with os.fdopen(fd, "rb", buffering=0) as on_disk:
        if os.fstat(fd).st_size != size:
            return None
        digest = git_blob_digest(size, len(expected))
        read = 0
        while read <= size and (chunk := on_disk.read(min(1 << 20, size + 1 - read))):
            digest.update(chunk)
            read += len(chunk)
    return digest.hexdigest() if read == size else None


def unfaithful_checkout(
    checkout: PrivateCheckout, commit: str, listed: Sequence[TreeFile] | None = None
) -> list[str]:
    """The files of a fresh checkout of ``commit`` whose bytes are not their blob, CRLF-to-LF
    aside.

    A checkout runs the commit's ``.gitattributes`` too: with ``working-tree-encoding=
    UTF-7`` a ``#`` the agent wrote (which UTF-7 reads back as itself, so ApplyPatchST's
    check of the changed files passed) is written out as ``+ACM``, and the command ran
    ``return a - b +ACM(b)`` where the commit says ``return a - b #(b)`` (a red-team
    pass). So every regular file the commit holds is hashed as it is on disk, as
    :func:`unfaithful_paths` does for a change; the commit's own listing (``ls-tree -l``)
    names each blob and its size, in one git (``listed``: that listing, already read).
    """
    if listed is None:
        listed = regular_files(checkout, commit)
    files = [(entry.path, entry.blob) for entry in listed]
    sizes = {entry.blob: entry.size for entry in listed}
    if not files:
        return []
    off: list[str] = []
    root = os.open(checkout.path, FOLDER)
    try:
        for path, blob in files:
            on_disk = _blob_on_disk(root, path, blob, sizes[blob])
            if on_disk != blob and not _line_endings_only(checkout, path, blob, sizes[blob]):
                off.append(path)
    finally:
        os.close(root)
    return sorted(off)


def regular_files(checkout: PrivateCheckout, commit: str) -> list[TreeFile]:
    """``commit``'s regular files, listed by git (what :func:`weigh_checkout` keeps)."""
    listed = _private_git(checkout, ["ls-tree", "-r", "-l", "-z", "--full-tree", commit])
    if listed.returncode != 0:
        raise GitError(f"git ls-tree: {listed.stderr.decode(errors='replace').strip()}")
    files: list[TreeFile] = []
    for entry in listed.stdout.split(b"\0"):
        meta, _, raw = entry.partition(b"\t")
        fields = meta.split()  # mode, type, object id, size
        if len(fields) == 4 and fields[0] in _REGULAR:
            files.append(TreeFile(os.fsdecode(raw), fields[2].decode(), int(fields[3])))
    return files


LINE_ENDINGS_MAX = 64 << 20
"""The largest blob whose file may differ from it by line endings alone."""


def _line_endings_only(
    where: PrivateCheckout | Worktree, path: str, blob: str, blob_size: int
) -> bool:
    """Whether the file on disk is the blob (of ``blob_size`` bytes) but for CRLF where
    the blob has LF. Both are held in memory to compare: past LINE_ENDINGS_MAX neither
    is read, and the file is taken as unfaithful (an agent's file has any size)."""
    if blob_size > LINE_ENDINGS_MAX:
        return False
    try:
        if isinstance(where, Worktree):
            with pinned(where) as folder:
                fd = regular_below(folder, path)
        else:  # a private checkout: out of the daemon's reach
            root = os.open(where.path, FOLDER)
            try:
                fd = regular_below(root, path)
            finally:
                os.close(root)
    except OSError:
        return False
    if fd is None:
        return False
    with os.fdopen(fd, "rb") as on_disk:
        if isinstance(where, Worktree):
            staged = _run(where, ["cat-file", "blob", blob])
        else:
            staged = _private_git(where, ["cat-file", "blob", blob])
        if staged.returncode != 0:
            return False
        data = on_disk.read(2 * len(staged.stdout) + 1)  # CRLF at most doubles it
    return data.replace(b"\r\n", b"\n") == staged.stdout


def _with_link(links: TreeLinks, change: IndexChange) -> IndexChange:
    target = links.links.get(change.path, "")
    return replace(change, link_target=target, link_inside=links.resolves_inside(change.path))


def _tree_links(worktree: Worktree, commit: str | None) -> TreeLinks:
    """The symlinks of ``commit`` (None: the index) and every path it holds, read from
    git's objects alone: the disk is the daemon's to rewrite while kodo looks (a link
    swapped for a folder just then would be judged, and the commit remembered, clean)."""
    listing = ["ls-tree", "-r", "-z", "--full-tree", commit] if commit else ["ls-files", "-s", "-z"]
    proc = _run(worktree, listing)
    if proc.returncode != 0:
        raise GitError(f"git {listing[0]}: {proc.stderr.decode(errors='replace').strip()}")
    paths: list[str] = []
    blobs: dict[str, str] = {}
    for entry in proc.stdout.split(b"\0"):
        meta, _, raw_path = entry.partition(b"\t")
        if not raw_path:
            continue
        path = os.fsdecode(raw_path)  # any bytes git holds, as the filesystem names them
        paths.append(path)
        fields = meta.decode().split()
        if fields[0] == SYMLINK:
            blobs[path] = fields[2] if commit else fields[1]  # ls-tree: mode type id
    return TreeLinks.of(paths, _blob_texts(worktree, blobs))


def _blob_texts(worktree: Worktree, blobs: dict[str, str]) -> dict[str, str]:
    """Each path's blob, as the filesystem would read the link's target."""
    if not blobs:
        return {}
    ids = list(dict.fromkeys(blobs.values()))
    proc = _run(worktree, ["cat-file", "--batch"], stdin=_ids_fed(ids))
    if proc.returncode != 0:
        raise GitError(f"git cat-file --batch: {proc.stderr.decode(errors='replace').strip()}")
    texts: dict[str, str] = {}
    out, at = proc.stdout, 0
    for blob in ids:
        header_end = out.index(b"\n", at)
        oid, kind, size = out[at:header_end].decode().split()
        if oid != blob or kind != "blob":
            raise GitError(f"git cat-file --batch: {blob} is a {kind}")
        start = header_end + 1
        texts[blob] = os.fsdecode(out[start : start + int(size)])
        at = start + int(size) + 1
    return {path: texts[blob] for path, blob in blobs.items()}


_CLEAN_BASES: Lru[str, bool] = Lru(4096)


def escaping_links(worktree: Worktree, commit: str | None = None) -> list[tuple[str, str]]:
    """The symlinks of ``commit`` (checked out in ``worktree``) that resolve outside the
    worktree, as (path, target), sorted; [] when none.

    A checked-out symlink stays live for every agent turn: ``w -> ..`` or ``r -> /``
    lets the daemon's tools read and write another run's worktree (the whole workspaces
    folder is writable to it) or its own state, where kodo judges only the path a tool
    names. Resolved from the commit's (or the index's) own entries and link targets,
    never the disk (shared.domain.tree_links: a chain of links, each harmless alone, is
    followed; a way out and back in through the workspaces folder counts as out), so a
    commit found clean is clean: remembered by id.
    """
    if commit is not None and _CLEAN_BASES.get(commit) is not None:
        return []
    # None: the index as staged. A change that adds a link may reopen a base link that
    # led nowhere (``a -> b/..``, then ``b -> .``): judged whole, never remembered.
    found = _tree_links(worktree, commit).escaping()
    if not found and commit is not None:
        _CLEAN_BASES.put(commit, True)
    return sorted(found)


def remove_worktree_dir(path: Path, workspaces: Path) -> None:
    """Delete a run's worktree folder without following anything the agent left in it: a
    symlink in its place is unlinked, a folder outside the workspaces is refused, and
    ``shutil.rmtree`` never follows the links inside (no ``git worktree remove``, which
    would read the worktree's own ``.git``)."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    if not resolved(path).is_relative_to(resolved(workspaces)):
        raise GitError(f"refusing to remove {path}: it is not under {workspaces}")
    # rm, not shutil.rmtree: a command can leave a tree thousands of folders deep (rmtree
    # recurses, and raised RecursionError for every cleanup pass) or paths past PATH_MAX;
    # rm -rf walks with openat and never follows a symlink.
    done = _rm_tree(path)
    if done.returncode != 0 and os.geteuid() != 0:
        # A command (a non-root worker binds the tree writable) can leave a folder of
        # mode 000 that rm, as the same uid, cannot enter: give every folder back its
        # owner's rights (chmod -R ignores the links it meets below ``path``) and try
        # once more. Not as root, whom no mode stops: chmod follows ``path`` itself if
        # another run's agent swapped it for a link meanwhile, and root's chmod -R
        # would then open up any folder on the host (a red-team pass).
        run_apart(
            [_CHMOD, "-R", "u+rwx", "--", str(path)],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        done = _rm_tree(path)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[:500]
        raise GitError(f"cannot remove {path}: {said}")


def _rm_tree(path: Path) -> subprocess.CompletedProcess[bytes]:
    return run_apart(
        [_RM, "-rf", "--one-file-system", "--", str(path)],
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )


_RM = "/bin/rm" if os.path.exists("/bin/rm") else "rm"
_CHMOD = "/bin/chmod" if os.path.exists("/bin/chmod") else "chmod"
