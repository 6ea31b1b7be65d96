"""What an intent pins at submit: the repository's identity, the base commit, the policy.

The submitter names ``base_ref``; the policy is also read from a trusted ref (the
operator's ``KODO_POLICY_REF``, else the branch the source repository's HEAD names)
and the strictest combination of the two is recorded on the intent. Later steps use the
recorded commit and policy, never the moving ref names.

Every git call here is read-only plumbing (``symbolic-ref``, ``cat-file``, ``ls-tree``,
``rev-parse``) through the hardened runner (no hooks, drivers, fsmonitor, replace
objects), the repository's config listed again only when its files change; a HEAD
that plainly names a branch is read as the file ``symbolic-ref`` would read.

Refs move, so they are resolved on every submit (both in one ``cat-file`` process). What
a commit holds does not: the policy read at a commit of a repository is kept in a
bounded in-process cache (:class:`PolicyCache`), keyed by the repository's identity (real
path, device, inode) and the commit's full object name. Replace objects are ignored by
every kodo git call, so nothing can make a commit show other content later; a policy
that fails to read is never kept (read again, and refused again, on each submit).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from shared.domain.pinning import RepoPin
from shared.domain.policy import Policy, PolicyError, policy_from_mapping, strictest
from shared.gitcmd import HardenedGit
from shared.lru import Lru
from shared.real_path import realpath

POLICY_DIR = ".kodo"
POLICY_PATH = f"{POLICY_DIR}/policy.toml"
POLICY_MAX_BYTES = 64 * 1024
GIT_TIMEOUT_S = 30
POLICY_CACHE_ENTRIES = 1024

_SIZE = re.compile(r"[0-9]{1,20}")
_COMMIT_LINE = re.compile(r"([0-9a-f]{40}|[0-9a-f]{64}) commit")
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")
"""A name ``cat-file --batch-check`` would read otherwise than ``rev-parse`` (a line
break splits it, a NUL cuts it, a trailing CR is dropped): never sent as a batch line."""


class _Git:
    """The submit's hardened git in one repository; a vanished repository answers like a
    failed git (exit 128), never an exception."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        try:
            self._git: HardenedGit | None = HardenedGit(repo, timeout_s=GIT_TIMEOUT_S)
        except OSError:  # no such directory
            self._git = None

    def __call__(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        if self._git is not None:
            try:
                return self._git.run(args, stdin=stdin)
            except OSError as exc:
                return subprocess.CompletedProcess(["git", *args], 128, b"", str(exc).encode())
        return subprocess.CompletedProcess(["git", *args], 128, b"", b"no such directory")


def observe_repo(path: str | Path) -> RepoPin | None:
    """The path's real location and the identity of the directory there (None: gone)."""
    real = realpath(str(path))
    try:
        st = os.stat(real)
    except OSError:
        return None
    return RepoPin(real, st.st_dev, st.st_ino)


def _resolve_one(git: _Git, ref: str) -> str | None:
    done = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    out = done.stdout.decode(errors="replace").strip()
    return out if done.returncode == 0 and out else None


def _resolve(git: _Git, refs: tuple[str, ...]) -> list[str | None]:
    """The commit each ref names now (None: none), as ``rev-parse --verify`` of
    ``REF^{commit}`` answers, in one ``cat-file --batch-check`` process.

    Both read a name with the same resolver. A name the batch cannot carry, or one the
    batch did not answer (a name that makes git die, such as ``@{upstream}`` without an
    upstream, ends the batch), is asked of ``rev-parse`` alone.
    """
    batchable = [ref for ref in refs if not _NOT_ONE_LINE.search(ref)]
    answered: dict[str, str | None] = {}
    if batchable:
        lines = "".join(f"{ref}^{{commit}}\n" for ref in batchable).encode()
        done = git("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=lines)
        replies = done.stdout.decode(errors="replace").split("\n")
        for ref, reply in zip(batchable, replies, strict=False):
            found = _COMMIT_LINE.fullmatch(reply)
            if found is not None:
                answered[ref] = found.group(1)
            elif reply.endswith((" missing", " ambiguous")):
                answered[ref] = None
    return [answered[ref] if ref in answered else _resolve_one(git, ref) for ref in refs]


_PLAIN_HEAD = re.compile(
    rb"ref: (refs/heads/[A-Za-z0-9_][A-Za-z0-9_-]*(?:/[A-Za-z0-9_][A-Za-z0-9_-]*)*)\n"
)
"""A HEAD file that names a branch as ``git symbolic-ref`` reads it, in a form that leaves
no doubt: each part of the name made of letters, digits, ``_`` and ``-`` only (no dot at
all, so no ``..``, no ``.lock``, no reftable ``.invalid``, no ``@{``), one line."""
HEAD_MAX_BYTES = 512


def _head_file_branch(repo: Path) -> str | None:
    """The branch ``<repo>/.git/HEAD`` names when it is a regular file holding one plain
    branch name (:data:`_PLAIN_HEAD`); None for anything else (a link, a FIFO, a
    detached or unusual HEAD, a bare repository or a ``.git`` file), which git is asked.

    ``git symbolic-ref -q HEAD`` answers the same for such a file (it reads it, checks
    the name, prints it): one git process less per submit, about 2 ms of its wall time
    on this project's machine. Opened without following a link at HEAD and without
    blocking, and read no further than a HEAD's size."""
    try:
        fd = os.open(repo / ".git" / "HEAD", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, HEAD_MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    found = _PLAIN_HEAD.fullmatch(head)
    return None if found is None else found.group(1).decode("ascii")


def _default_branch(git: _Git) -> str:
    """The branch the source repository's HEAD names (``HEAD`` itself if detached)."""
    plain = _head_file_branch(git.repo)
    if plain is not None:
        return plain
    done = git("symbolic-ref", "-q", "HEAD")
    name = done.stdout.decode(errors="replace").strip()
    return name if done.returncode == 0 and name else "HEAD"


PolicyKey = tuple[str, int, int, str]
"""(real path, device, inode, commit): a repository's identity and a full object name."""


@dataclass(frozen=True)
class PolicyAt:
    """What a commit's ``.kodo/policy.toml`` says: ``policy`` is None if there is none."""

    policy: Policy | None


class PolicyCache(Lru[PolicyKey, PolicyAt]):
    """Policies read at a commit, per repository identity, least recently used dropped.

    A commit's content never changes (replace objects are off for every kodo git call),
    so an entry is never stale; a new commit is a new key, read afresh. Refs are never
    cached. Thread- and greenlet-safe (one lock around a dict operation); it counts its
    hits and misses.
    """

    def __init__(self, max_entries: int = POLICY_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a policy cache holds at least one entry")
        super().__init__(max_entries)
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: PolicyKey) -> PolicyAt | None:
        found = super().get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def clear(self) -> None:
        super().clear()
        self.hits = self.misses = 0


POLICY_CACHE = PolicyCache()
"""This process's cache (each API and worker process has its own)."""


def _tree_entry(git: _Git, commit: str, path: str, where: str) -> list[str] | None:
    """``[mode, type, object, size]`` of ``path`` at ``commit`` (``ls-tree --long``: the
    size is ``-`` for a tree; None: no such entry)."""
    listed = git("ls-tree", "--long", "-z", "--full-tree", commit, "--", path)
    if listed.returncode != 0:
        raise PolicyError(f"cannot read {where}: {listed.stderr.decode(errors='replace')}")
    entry = listed.stdout.decode(errors="replace").rstrip("\0")
    return entry.partition("\t")[0].split() if entry else None


def _where(ref: str, commit: str) -> str:
    return f"{POLICY_PATH} at {ref} ({commit[:12]})"


def _source(ref: str, commit: str) -> str:
    return f"{ref}@{commit[:12]}:{POLICY_PATH}"


def _read_policy_file(git: _Git, commit: str, ref: str) -> PolicyAt:
    """``.kodo/policy.toml`` at ``commit``, read with git; raises PolicyError naming the
    file and the ref when it is not a regular file, too large, not TOML, or not a valid
    ``[policy]`` table."""
    where = _where(ref, commit)
    # A .kodo that is a symlink or a submodule hides the file from ls-tree: not "no policy".
    folder = _tree_entry(git, commit, POLICY_DIR, where)
    if folder is None:  # the common case, one git process: no .kodo at all
        return PolicyAt(None)
    if folder[:2] != ["040000", "tree"]:
        raise PolicyError(f"{where}: {POLICY_DIR} is not a directory ({folder[0]})")
    meta = _tree_entry(git, commit, POLICY_PATH, where)
    if meta is None:
        return PolicyAt(None)
    if len(meta) != 4 or meta[1] != "blob" or meta[0] not in ("100644", "100755"):
        raise PolicyError(f"{where} is not a regular file ({meta[0]})")
    blob, size = meta[2], meta[3]
    # the listing's size: never load a huge blob to learn it
    if not _SIZE.fullmatch(size) or int(size) > POLICY_MAX_BYTES:
        raise PolicyError(f"{where} is larger than {POLICY_MAX_BYTES} bytes (or unreadable)")
    shown = git("cat-file", "blob", blob)
    if shown.returncode != 0:
        raise PolicyError(f"cannot read {where}: {shown.stderr.decode(errors='replace')}")
    if len(shown.stdout) > POLICY_MAX_BYTES:
        raise PolicyError(f"{where} is larger than {POLICY_MAX_BYTES} bytes")
    try:
        parsed = tomllib.loads(shown.stdout.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where} is not valid TOML: {exc}") from exc
    table = parsed.get("policy", {})
    if not isinstance(table, dict) or set(parsed) - {"policy"}:
        raise PolicyError(f"{where} must hold one [policy] table")
    try:
        return PolicyAt(policy_from_mapping(table, source=_source(ref, commit)))
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from exc


def _policy_at(git: _Git, pin: RepoPin, commit: str, ref: str, cache: PolicyCache) -> Policy:
    """The policy at ``commit`` (read through ``cache``), its source naming ``ref``."""
    key: PolicyKey = (pin.path, pin.device, pin.inode, commit)
    found = cache.get(key)
    if found is None:
        found = _read_policy_file(git, commit, ref)
        cache.put(key, found)
    if found.policy is None:
        return Policy()
    return replace(found.policy, source=_source(ref, commit))


class UnknownBaseRef(ValueError):
    """``base_ref`` names no commit in the repository."""


@dataclass(frozen=True)
class Pinned:
    """What a submit records: the repository's identity, the base commit, the policy."""

    repo: RepoPin
    base_ref: str
    base_commit: str
    policy: Policy


def pin_submission(
    pin: RepoPin,
    base_ref: str,
    policy_ref: str | None,
    *,
    cache: PolicyCache = POLICY_CACHE,
) -> Pinned:
    """Resolve ``base_ref`` and the trusted ref now and combine their policies.

    Raises UnknownBaseRef, or PolicyError when the trusted ref names no commit or
    either policy is malformed. Touches git only (no database): callers pin before
    they open their transaction. One ``cat-file`` when both policies are cached and the
    repository's config listing is too (:mod:`shared.gitcmd` keeps it while its files
    are unchanged), and a ``symbolic-ref`` when HEAD is not a plain branch's file
    (:func:`_head_file_branch`). A commit's policy read the first time costs one
    ``ls-tree`` when the commit has no ``.kodo``, three when it holds the file (its
    folder's entry, the file's entry with its size, the blob).
    """
    git = _Git(Path(pin.path))
    trusted_ref = policy_ref or _default_branch(git)
    base_commit, trusted_commit = _resolve(git, (base_ref, trusted_ref))
    if base_commit is None:
        raise UnknownBaseRef(f"unknown base_ref {base_ref!r}")
    if trusted_commit is None:
        raise PolicyError(f"the trusted policy ref {trusted_ref!r} names no commit in {pin.path}")
    trusted = _policy_at(git, pin, trusted_commit, trusted_ref, cache)
    at_base = _policy_at(git, pin, base_commit, base_ref, cache)
    return Pinned(pin, base_ref, base_commit, strictest(trusted, at_base))
