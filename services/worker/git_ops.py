"""Git worktrees and patches: the only code that changes a repository.

Paths in a patch are confined to the worktree: no absolute paths, no ``..``, nothing
under ``.git``. Everything runs as argv (no shell) with a timeout.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shared.gitcmd import run_git
from shared.hashing import sha256_hex

GIT_TIMEOUT_S = 60
_DIFF_PATH = re.compile(r"^(?:diff --git a/(\S+) b/(\S+)|--- (?:a/)?(\S+)|\+\+\+ (?:b/)?(\S+))")
_IDENTITY = {"user.name": "kodo", "user.email": "kodo@localhost"}


class GitError(RuntimeError):
    pass


class UnsafePatch(ValueError):
    """A patch names a path outside the worktree."""


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str


def git(cwd: Path, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
    """Run hardened git (shared.gitcmd: no hooks, drivers or fsmonitor) as kodo."""
    proc = run_git(cwd, args, stdin=stdin, timeout_s=GIT_TIMEOUT_S, config=_IDENTITY)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


@contextmanager
def repo_lock(workspace_dir: Path, repo: Path) -> Iterator[None]:
    """Serialise worktree bookkeeping per repository across worker processes.

    ``git worktree add/prune`` edit the repository's shared ``.git/worktrees``;
    concurrent runs on one repository would otherwise race ("failed to read
    .git/worktrees/..."). The lock file lives in our workspace, not the user's repo.
    """
    locks = workspace_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{sha256_hex(str(repo.resolve()))[:16]}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_worktree(repo: Path, workspace_dir: Path, run_id: str, base_ref: str) -> Worktree:
    """A worktree on branch ``kodo/<run_id>`` at ``base_ref``; reused if it exists.

    The usual case (no branch, no stale registration) is one ``git worktree add``; only
    when that fails are stale registrations pruned and an existing branch reused.
    """
    branch = f"kodo/{run_id}"
    path = workspace_dir / run_id
    if (path / ".git").exists():
        current = git(path, "rev-parse", "--abbrev-ref", "HEAD").strip()
        if current != branch:
            raise GitError(f"{path} is on {current}, expected {branch}")
        return Worktree(path, branch)
    workspace_dir.mkdir(parents=True, exist_ok=True)
    with repo_lock(workspace_dir, repo):
        try:
            git(repo, "worktree", "add", "-q", "-b", branch, str(path), base_ref)
        except GitError:  # an earlier delivery made the branch, or left a registration
            git(repo, "worktree", "prune")
            if git(repo, "branch", "--list", branch).strip():
                git(repo, "worktree", "add", "-q", str(path), branch)
            else:
                git(repo, "worktree", "add", "-q", "-b", branch, str(path), base_ref)
    return Worktree(path, branch)


def patch_paths(diff: str) -> list[str]:
    """Every path a unified diff touches (``/dev/null`` excluded)."""
    found: list[str] = []
    for line in diff.splitlines():
        match = _DIFF_PATH.match(line)
        if match:
            found += [p for p in match.groups() if p and p != "/dev/null"]
    return sorted(set(found))


def check_confined(diff: str) -> list[str]:
    """The patch's paths, or UnsafePatch if any could leave the worktree."""
    paths = patch_paths(diff)
    if not paths:
        raise UnsafePatch("the patch touches no file")
    for raw in paths:
        path = PurePosixPath(raw)
        if path.is_absolute() or ".." in path.parts or ".git" in path.parts or "\\" in raw:
            raise UnsafePatch(f"path {raw!r} is outside the worktree")
    return paths


def head_trailer(worktree: Path, key: str) -> str | None:
    body = git(worktree, "log", "-1", "--format=%B")
    for line in body.splitlines():
        if line.startswith(f"{key}: "):
            return line.split(": ", 1)[1].strip()
    return None


def ensure_clean(worktree: Path) -> None:
    """Drop anything left in the worktree (an agent's edits, a half-finished apply).

    One ``git status`` in the usual, clean case; reset and clean only when needed.
    """
    if git(worktree, "status", "--porcelain", "--untracked-files=all").strip():
        git(worktree, "reset", "-q", "--hard", "HEAD")
        git(worktree, "clean", "-fdq")


def try_apply(worktree: Path, diff: str) -> str | None:
    """Apply ``diff`` to the index and the files; None on success, else git's reason.

    ``git apply`` is atomic: a patch that fails leaves every file as it was, so no
    separate ``--check`` pass is needed.
    """
    proc = run_git(
        worktree,
        ["apply", "--index", "--whitespace=nowarn", "-"],
        stdin=diff.encode(),
        timeout_s=GIT_TIMEOUT_S,
    )
    return None if proc.returncode == 0 else proc.stderr.decode(errors="replace").strip()


def commit_index(worktree: Path, message: str) -> str:
    """Commit what the index holds; return the new commit id."""
    git(worktree, "commit", "-q", "-m", message)
    return git(worktree, "rev-parse", "HEAD").strip()


def has_symlink_escape(worktree: Path, paths: list[str]) -> str | None:
    """A path whose existing parent resolves outside the worktree (through a symlink)."""
    root = worktree.resolve()
    for raw in paths:
        target = (worktree / raw).parent.resolve()
        if target != root and not target.is_relative_to(root):
            return raw
    return None
