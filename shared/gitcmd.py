"""The one way kodo runs git: hardened so a repository can never make git run its code.

A repository (or a command that once ran in it) controls ``.git/config``, ``.git/hooks``
and ``.gitattributes``; each can name a program for git to run (a hook, an fsmonitor, a
filter/diff/merge driver, a pager, an editor, an ssh command). Every call here:

* reads no system or global config (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL``);
* points ``core.hooksPath`` nowhere and turns fsmonitor off;
* blanks every command-valued key the repository's config sets (listed with
  ``git config --list`` first), so no filter/diff/merge driver can start;
* passes ``--no-ext-diff --no-textconv`` to the commands that diff;
* passes ``--ignore-submodules=dirty`` to the commands that diff and to ``status``: a
  nested repository's commit is still compared (a gitlink a ``.gitmodules`` marks
  ``ignore = all`` is never hidden from what kodo judges), but git never looks inside its
  work tree, which would start a ``git status`` there under that repository's own config
  (its filter drivers are not among the keys blanked here);
* allows no protocol at all (delivery allows its own), never fetches lazily, never
  prompts, never pages, never opens an editor;
* ignores replace objects (``GIT_NO_REPLACE_OBJECTS``): a ``refs/replace/`` ref would
  let a repository show other content under a commit's, tree's or blob's own name, and
  change it later, so a pinned commit would no longer pin what kodo read and checks out
  (grafts, the other history rewrite, change parents only, never a commit's tree).

Overrides travel as ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n`` (command-line scope, the
highest precedence), so a key with ``=`` or spaces in its subsection stays one key.
:class:`HardenedGit` lists the repository's config once for several calls in a row (one
request's), which is what :func:`run_git` does for a single call. In a gevent-patched
process git is started with ``posix_spawn`` (``shared.cospawn``), never by forking it.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared import cospawn
from shared.apart import run_apart
from shared.domain.step_outcome import RuleRefusal
from shared.plain_file import read_plain
from shared.real_path import resolved

HARDENED: dict[str, str] = {
    "core.hooksPath": "/dev/null",
    # attributes from a file the repository's config names would decide how a change
    # is shown, as a tree's .gitattributes may not (attribute_free; red-team helper-104)
    "core.attributesFile": "/dev/null",
    "core.fsmonitor": "false",
    "core.useBuiltinFSMonitor": "false",
    "core.untrackedCache": "false",
    "core.pager": "cat",
    "core.editor": "false",
    "sequence.editor": "false",
    "core.askPass": "",
    "core.sshCommand": "false",
    "core.gitProxy": "",
    "core.alternateRefsCommand": "",
    "credential.helper": "",
    "diff.external": "",
    "gpg.program": "false",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    # No transport at all: a promisor remote (a partial clone) made git fetch a missing
    # object by itself, from a repository outside the roots or by running the
    # repository's own ``remote.<name>.uploadpack`` (a key git reads first-wins, so no
    # blank set here overrides it; red-team helper-111). Delivery allows its protocols.
    "protocol.allow": "never",
    "protocol.file.allow": "never",
    # What the approver reads is git's own spelling of a change: no prefix games
    # (``diff.noprefix`` named a new ``a/x b/setup.py`` as ``setup.py``), no colour
    # codes, no diff relative to a folder, names quoted the one way readers expect.
    "diff.noprefix": "false",
    "diff.mnemonicPrefix": "false",
    "diff.relative": "false",
    "color.ui": "false",
    "core.quotePath": "true",
    "gc.auto": "0",
    "maintenance.auto": "false",
    # A submodule's git dir is whatever its folder's .git names, which an agent can
    # plant: git must never recurse into one (a repository's own `submodule.recurse =
    # true` made `reset --hard` run `read-tree -u` under a planted git dir's config, its
    # filter included), nor read one to show a diff or a status summary.
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
    "push.recurseSubmodules": "no",
    "diff.submodule": "short",
    "status.submoduleSummary": "false",
}
"""Set on every call, whatever the repository's config says."""

_COMMAND_KEYS = re.compile(
    r"""^(?:
        filter\..+\.(?:clean|smudge|process)
      | diff\..+\.(?:command|textconv)
      | merge\..+\.driver
      | (?:difftool|mergetool)\..+\.(?:cmd|path)
      | gpg\..+\.program
      | remote\..+\.(?:uploadpack|receivepack|vcs)
      | pager\..+
      | alias\..+
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
"""Repository config keys whose value git may run as a program: each is blanked."""

_DIFFING = frozenset(
    {"diff", "log", "show", "diff-tree", "diff-index", "diff-files", "format-patch"}
)
SUBMODULES = "--ignore-submodules=dirty"
"""Compare a nested repository's commit, never look into its work tree (see above)."""

ENV: dict[str, str] = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "GIT_EDITOR": "false",
    "GIT_ASKPASS": "false",
    "SSH_ASKPASS": "false",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_NO_LAZY_FETCH": "1",  # (git 2.44 and later: never fetch a missing object)
    "LC_ALL": "C",
}
"""The environment of every git call (plus PATH); nothing else of the caller's leaks in."""


class GitTimeout(RuleRefusal, RuntimeError):
    """git took longer than its timeout (it was killed). A step that meets one fails
    closed under rule ``git_deadline``: what git was given (an agent's change, a
    repository's attributes) is as slow as its author makes it."""

    rule = "git_deadline"


def command_keys(config_names: Sequence[str]) -> list[str]:
    """The keys of ``git config --list --name-only`` that name a program to run."""
    return [name for name in config_names if _COMMAND_KEYS.match(name)]


def config_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """``overrides`` as git's command-scope config environment."""
    env = {"GIT_CONFIG_COUNT": str(len(overrides))}
    for i, (key, value) in enumerate(overrides.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def hardened_args(args: Sequence[str]) -> list[str]:
    """``args`` with ``--no-ext-diff --no-textconv`` after a diffing subcommand, and
    :data:`SUBMODULES` after it and after ``status`` (the command line wins over any
    ``diff.ignoreSubmodules`` or ``submodule.<name>.ignore``); leading ``--bare`` and
    ``--git-dir=`` options (:func:`attribute_free`) stay in front of the subcommand."""
    lead = 0
    while lead < len(args) and (args[lead] == "--bare" or args[lead].startswith("--git-dir=")):
        lead += 1
    front, args = list(args[:lead]), args[lead:]
    if args and args[0] in _DIFFING:
        return [*front, args[0], "--no-ext-diff", "--no-textconv", SUBMODULES, *args[1:]]
    if args and args[0] == "status":
        return [*front, args[0], SUBMODULES, *args[1:]]
    return [*front, *args]


def attribute_free(gitdir: Path) -> list[str]:
    """The global options under which git, run in ``gitdir`` (a worktree's git dir, as
    kodo verified it), reads no ``.gitattributes`` of the trees it compares.

    A repository's own attributes decide how git shows a change: ``*.py binary`` (or
    ``-diff``) turns a text file's diff into ``GIT binary patch`` base85, which a reviewer
    cannot read. git 2.39 cannot be told to ignore them (``GIT_ATTR_SOURCE`` came in
    2.40), but with no work tree git reads attributes from neither a work tree nor an
    index. From the worktree's own folder git finds the work tree whatever ``--bare``
    says (tried), so the call runs in the git dir. Compare full commit or tree ids only
    (a name like ``HEAD`` is also a file there).
    """
    return ["--bare", f"--git-dir={gitdir}"]


def located(cwd: Path, git_dir: Path | None) -> dict[str, str]:
    """The environment naming ``git_dir`` and its work tree ``cwd`` to git (nothing without
    one). git then reads no ``.git`` in ``cwd``: a linked worktree's pointer, which whoever
    may write the work tree can swap between a check of it and git's own read, never
    decides which git dir (whose config, hooks, HEAD and index) a call uses."""
    if git_dir is None:
        return {}
    return {"GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(cwd)}


def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **ENV}


def _git_process(
    cwd: Path, args: Sequence[str], env: Mapping[str, str], stdin: bytes | None, timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    """``git <args>`` in ``cwd``, to its end (``subprocess.run``'s errors and timeout).

    In a gevent-patched process (the API, oc-compat) git is started with
    ``posix_spawn`` (:mod:`shared.cospawn`), never a fork of the whole process; the
    working directory then travels as ``git -C``, which git enters before anything else.
    """
    if cospawn.cooperative():
        if not cwd.is_dir():  # as subprocess.run(cwd=...) would say
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(cwd))
        argv = ["git", "-C", str(cwd), *args]
        return cospawn.run(argv, env=env, stdin=stdin, timeout_s=timeout_s)
    # ``input`` or ``stdin``, never both named: gevent's subprocess.run refuses a
    # ``stdin`` keyword beside ``input`` even if None
    feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return run_apart(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
        **feed,
    )


def _listed_names(cwd: Path, timeout_s: float, git_dir: Path | None = None) -> list[str]:
    """The names in the repository config git reads for a call in ``cwd``."""
    return list(_listed(cwd, timeout_s, git_dir)[0])


def hardening_for(
    cwd: Path, extra: Mapping[str, str], timeout_s: float, git_dir: Path | None = None
) -> tuple[dict[str, str], list[Path]]:
    """:func:`overrides_for`, and the files git reads the repository config from (the
    common config, a worktree's own, any file they include; each as git names it,
    relative to ``cwd`` or absolute), from one listing: a pinned git needs both, and
    each reading of the config's identity is a dozen system calls."""
    names, origins = _listed(cwd, timeout_s, git_dir)
    files = [cwd / origin.removeprefix("file:") for origin in origins]
    return _overrides(names, extra), files


def _listed(
    cwd: Path, timeout_s: float, git_dir: Path | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names in the repository config git reads for a call in ``cwd``, and the
    ``file:`` origins they came from.

    Listing them is a git process of its own, as costly as the call it protects, so a
    listing is reused while every file it came from is unchanged (see
    :func:`_config_identity`); a config that includes other files is listed every time.
    """
    identity = _config_identity(cwd, git_dir)
    if identity is not None:
        with _LISTINGS_LOCK:
            cached = _LISTINGS.get(identity)
        if cached is not None:
            return cached
    env = {**base_env(), **located(cwd, git_dir), **config_env(HARDENED)}
    listing = ["config", "--list", "--show-origin", "--name-only", "-z"]
    try:
        proc = _git_process(cwd, listing, env, None, timeout_s)
    except subprocess.TimeoutExpired as exc:  # as the call it protects would say
        raise GitTimeout(f"git {' '.join(listing)} took longer than {timeout_s}s") from exc
    if proc.returncode != 0:
        return (), ()  # outside a repository there is no repository config to neutralise
    fields = proc.stdout.decode(errors="surrogateescape").split("\0")
    # (the names kodo sets itself on the command line are not the repository's)
    pairs = [(o, n) for o, n in zip(fields[0:-1:2], fields[1::2], strict=False) if n]
    origins = [o for o, _ in pairs]
    names = [n for o, n in pairs if not o.startswith("command line:")]
    files = tuple(dict.fromkeys(o for o in origins if o.startswith("file:")))
    listed = (tuple(names), files)
    unchanged = _config_identity(cwd, git_dir) == identity  # nothing it keys on changed meanwhile
    if (
        identity is not None
        and unchanged
        and _read_the_keyed_files(cwd, origins, identity)
        and not any(_INCLUDES.match(n) for n in names)
    ):
        with _LISTINGS_LOCK:
            if len(_LISTINGS) >= _LISTINGS_MAX:
                _LISTINGS.pop(next(iter(_LISTINGS)))
            _LISTINGS[identity] = listed
    return listed


def _read_the_keyed_files(
    cwd: Path, origins: list[str], identity: tuple[tuple[int, ...] | None, ...]
) -> bool:
    """Whether the listing shows git read the common config the key names, and no file
    but the keyed ones (``--show-origin``: a path relative to ``cwd``, or absolute).

    git may reject the git dir kodo resolved (an owner it calls dubious, a folder it
    cannot enter) and walk up to another repository, or list none at all, while the
    keyed files are unchanged: that listing must not serve the key (its command keys
    are another config's, or none)."""
    common = identity[0]
    if common is None:
        return False
    keyed = [entry[:2] for entry in identity if entry is not None]
    seen: set[tuple[int, ...]] = set()
    for origin in origins:
        if origin == "command line:":
            continue  # kodo's own overrides
        if not origin.startswith("file:"):
            return False
        try:
            st = (cwd / origin.removeprefix("file:")).stat()
        except OSError:
            return False
        if (st.st_dev, st.st_ino) not in keyed:
            return False
        seen.add((st.st_dev, st.st_ino))
    return common[:2] in seen  # a repository's common config always holds core.*


_LISTINGS: dict[tuple[tuple[int, ...] | None, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
_LISTINGS_LOCK = threading.Lock()
_LISTINGS_MAX = 512
_INCLUDES = re.compile(r"^include(?:if)?\.", re.IGNORECASE)


def _config_identity(
    cwd: Path, git_dir: Path | None = None
) -> tuple[tuple[int, ...] | None, ...] | None:
    """What identifies the repository config a git call in ``cwd`` reads, or None when
    kodo cannot tell (no ``.git`` in ``cwd`` itself: a bare repository, a subfolder),
    ``cwd`` being a worktree or a linked worktree's own git dir.

    System and global config are off (:data:`ENV`), so git reads ``<common dir>/config``
    and ``<git dir>/config.worktree``, and nothing else: two calls that read the same
    files list the same names, whatever their folder (a repository's worktrees share a
    listing). A worktree's ``.git`` file names its git dir, whose ``commondir`` names
    the common one. Each file counts by device, inode, size, mtime and ctime
    (nanoseconds): git rewrites a config by renaming a new file over it (a new inode),
    and any other write moves its ctime, which no user can set. Taken before the
    listing, so a change racing with it is seen at the next call.

    With ``git_dir`` (named to git, :func:`located`) that folder is the git dir and no
    pointer is read. Where kodo's reading of the pointers could differ from git's, or the
    common config is missing (a real repository always has one), nothing is cached: a
    listing keyed by the wrong files could leave the right file's command keys unblanked.
    """
    dotgit = cwd / ".git"
    try:
        if git_dir is not None:
            gitdir = git_dir  # named to git (GIT_DIR): no pointer is read
        elif dotgit.is_symlink():
            return None
        elif dotgit.is_dir():
            gitdir = dotgit
        elif dotgit.is_file():
            pointed = _gitfile_target(read_plain(dotgit))
            if pointed is None:
                return None
            gitdir = cwd / pointed
        elif not dotgit.exists() and _is_worktree_admin_dir(cwd):
            gitdir = cwd  # a call in a worktree's git dir (attribute_free's): git's too
        else:
            return None
        common = gitdir
        pointer = gitdir / "commondir"
        if pointer.exists():
            # git drops trailing line feeds and carriage returns only (setup.c); a path
            # git could read otherwise than kodo (a control character, an empty one) is
            # not cached
            named = read_plain(pointer).rstrip(b"\r\n")
            if not named or any(b < 0x20 or b == 0x7F for b in named):
                return None
            common = gitdir / os.fsdecode(named)
        config = common / "config"
        if gitdir.is_symlink() or not gitdir.is_dir() or not config.is_file():
            return None
        if gitdir == cwd and resolved(common) != resolved(cwd.parent.parent):
            return None  # an admin folder whose commondir names another repository
        if not _git_accepts(gitdir, common):
            return None  # git would walk up from it and read another repository's config
        return (_file_identity(config), _file_identity(gitdir / "config.worktree"))
    except OSError:
        return None


_HEADREF = re.compile(rb"(?:ref: refs/[^\n]+|[0-9a-f]{40}|[0-9a-f]{64})\n?")


def _is_worktree_admin_dir(path: Path) -> bool:
    """Whether ``path`` is a linked worktree's admin folder as ``git worktree add`` makes
    it: ``<common>/worktrees/<name>`` holding ``commondir`` and ``gitdir`` (git's
    acceptance of it is checked with every git dir's, :func:`_git_accepts`)."""
    try:
        if path.is_symlink() or path.parent.name != "worktrees":
            return False
        return (path / "commondir").is_file() and (path / "gitdir").is_file()
    except OSError:
        return False


def _git_accepts(gitdir: Path, common: Path) -> bool:
    """Whether git takes ``gitdir`` for a git dir (setup.c's is_git_directory): a HEAD
    it can read as a ref or an object id, ``objects`` and ``refs`` in the common dir.

    Otherwise git walks up to a parent folder's repository, or lists no repository
    config at all, while the files kodo keys the listing on are unchanged: a listing
    cached then (or a listing cached before, used then) would not be of the config git
    reads, and its command keys would go unblanked. A symlinked HEAD (which git may
    accept) is not cached either. Checked before and after each listing
    (:func:`_listed`); a change between a check and git's own read is the race
    every listing has, seen at the next call.
    """
    try:
        head = gitdir / "HEAD"
        if head.is_symlink() or _HEADREF.fullmatch(read_plain(head)) is None:
            return False
        return (common / "objects").is_dir() and (common / "refs").is_dir()
    except OSError:
        return False


def _gitfile_target(content: bytes) -> str | None:
    """The path a ``.git`` file names, read as git reads it (``gitdir: `` then the rest,
    trailing CR and LF dropped); None for anything git might read otherwise."""
    if not content.startswith(b"gitdir: "):
        return None
    path = content[len(b"gitdir: ") :].rstrip(b"\r\n")
    if not path or any(b < 0x20 or b == 0x7F for b in path):
        return None
    return os.fsdecode(path)


def _file_identity(path: Path) -> tuple[int, ...] | None:
    """The file itself, however its path is spelled (a worktree reaches the common
    config through ``../..``); None when it does not exist (it contributes nothing)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def overrides_for(
    cwd: Path, extra: Mapping[str, str], timeout_s: float, git_dir: Path | None = None
) -> dict[str, str]:
    """Every override for a call in ``cwd``: blanked command keys, then the fixed ones."""
    return _overrides(_listed_names(cwd, timeout_s, git_dir), extra)


_LAZY_FETCH_KEYS = re.compile(
    r"^(?:remote\..+\.(?:promisor|partialclonefilter)|extensions\.partialclone)$", re.I
)
"""Config that makes git fetch a missing object by itself (a partial clone: a remote's
``partialCloneFilter`` alone makes it a promisor; red-team helper-114)."""
_TRANSPORT_KEYS = re.compile(r"^protocol\.(?:.+\.)?allow$", re.I)
"""Config that opens a transport: git reads ``protocol.<name>.allow`` before
``protocol.allow``, so a repository's own ``protocol.ext.allow = always`` had outlived
kodo's ``protocol.allow = never`` (red-team helper-114); each is set to never."""


def lazy_fetch_keys(names: Sequence[str]) -> list[str]:
    """The keys of a config listing that make git fetch missing objects by itself."""
    return [name for name in names if _LAZY_FETCH_KEYS.match(name)]


def transport_keys(names: Sequence[str]) -> list[str]:
    """The keys of a config listing that allow a transport."""
    return [name for name in names if _TRANSPORT_KEYS.match(name)]


def config_names(cwd: Path, timeout_s: float = 60) -> list[str]:
    """The names of the repository config git reads in ``cwd`` (listed hardened)."""
    return _listed_names(cwd, timeout_s)


class LazyFetchConfig(RuleRefusal, RuntimeError):
    """A repository whose config makes git fetch missing objects itself (rule
    ``git_dir``): kodo fetches nothing (no protocol is allowed), and says so plainly
    rather than as a missing object; such a remote's ``uploadpack`` is a program that
    no blank overrides (git reads that key first-wins)."""

    rule = "git_dir"


def _overrides(names: Sequence[str], extra: Mapping[str, str]) -> dict[str, str]:
    lazy = lazy_fetch_keys(names)
    if lazy:
        raise LazyFetchConfig(
            f"git_dir: the repository's config sets {lazy[0]} (a partial clone): git would"
            " fetch missing objects by itself, and kodo fetches nothing; clone it whole"
        )
    blanked = {key: "" for key in command_keys(names)}
    blanked.update({key: "never" for key in transport_keys(names)})
    for key in list(blanked):
        if key.lower().startswith("filter."):  # a required filter with no command fails
            blanked[key.rsplit(".", 1)[0] + ".required"] = "false"
    return {**blanked, **HARDENED, **extra}


class HardenedGit:
    """Hardened git calls in one repository, its config listed once for all of them.

    Each call otherwise lists the repository's config first (a process of its own);
    calls made together (one request's plumbing) share that listing, which is no older
    for the last of them than a single call's listing is for itself by the time git
    reads the config again.
    """

    def __init__(
        self,
        cwd: Path,
        *,
        timeout_s: float = 60,
        config: Mapping[str, str] | None = None,
        git_dir: Path | None = None,
        index_file: Path | None = None,
        objects: Mapping[str, str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.timeout_s = timeout_s
        overrides = overrides_for(cwd, config or {}, timeout_s, git_dir)
        self._env = {**base_env(), **located(cwd, git_dir), **config_env(overrides)}
        if index_file is not None:  # an index of the caller's, not the git dir's own
            self._env["GIT_INDEX_FILE"] = str(index_file)
        self._env.update(objects or {})  # where git writes objects, and reads them

    def run(
        self, args: Sequence[str], *, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git <args>``; never raises on git's own failure."""
        try:
            return _git_process(self.cwd, hardened_args(args), self._env, stdin, self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise GitTimeout(f"git {' '.join(args)} took longer than {self.timeout_s}s") from exc

    def open(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``git <args>`` with pipes to and from it, for output read as it comes (the
        caller bounds its time and waits for it). Not in a gevent-patched process."""
        return subprocess.Popen(
            ["git", *hardened_args(args)],
            cwd=self.cwd,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )


def run_git(
    cwd: Path,
    args: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout_s: float = 60,
    config: Mapping[str, str] | None = None,
    git_dir: Path | None = None,
    index_file: Path | None = None,
    objects: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>`` in ``cwd``, hardened; never raises on git's own failure. With
    ``git_dir``, ``cwd`` is its work tree and git is told both (:func:`located`); with
    ``index_file``, git's index is that file; ``objects`` is git's object environment
    (``GIT_OBJECT_DIRECTORY``, ``GIT_ALTERNATE_OBJECT_DIRECTORIES``), if not its own."""
    hardened = HardenedGit(
        cwd,
        timeout_s=timeout_s,
        config=config,
        git_dir=git_dir,
        index_file=index_file,
        objects=objects,
    )
    return hardened.run(args, stdin=stdin)
