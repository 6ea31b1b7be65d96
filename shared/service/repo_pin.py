"""What an intent pins at submit: the repository's identity, the base commit, the policy.

The submitter names ``base_ref``; the policy is also read from a trusted ref (the
operator's ``KODO_POLICY_REF``, else the branch the source repository's HEAD names)
and the strictest combination of the two is recorded on the intent. Later steps use the
recorded commit and policy, never the moving ref names.

Every git call here is read-only plumbing (``rev-parse``, ``symbolic-ref``,
``ls-tree``, ``cat-file``) through the hardened runner (no hooks, drivers, fsmonitor).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from shared.domain.pinning import RepoPin
from shared.domain.policy import Policy, PolicyError, policy_from_mapping, strictest
from shared.gitcmd import run_git

POLICY_DIR = ".kodo"
POLICY_PATH = f"{POLICY_DIR}/policy.toml"
POLICY_MAX_BYTES = 64 * 1024
GIT_TIMEOUT_S = 30


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Hardened git (shared.gitcmd); a repository that vanished answers like a failed git."""
    try:
        return run_git(repo, args, timeout_s=GIT_TIMEOUT_S)
    except OSError as exc:  # no such directory
        return subprocess.CompletedProcess(["git", *args], 128, b"", str(exc).encode())


def observe_repo(path: str | Path) -> RepoPin | None:
    """The path's real location and the identity of the directory there (None: gone)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return RepoPin(real, st.st_dev, st.st_ino)


def resolve_commit(repo: Path, ref: str) -> str | None:
    """The commit ``ref`` names now, or None."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    out = done.stdout.decode(errors="replace").strip()
    return out if done.returncode == 0 and out else None


def default_branch(repo: Path) -> str:
    """The branch the source repository's HEAD names (``HEAD`` itself if detached)."""
    done = _git(repo, "symbolic-ref", "-q", "HEAD")
    name = done.stdout.decode(errors="replace").strip()
    return name if done.returncode == 0 and name else "HEAD"


def _tree_entry(repo: Path, commit: str, path: str, where: str) -> list[str] | None:
    """``[mode, type, object]`` of ``path`` at ``commit`` (None: no such entry)."""
    listed = _git(repo, "ls-tree", "-z", "--full-tree", commit, "--", path)
    if listed.returncode != 0:
        raise PolicyError(f"cannot read {where}: {listed.stderr.decode(errors='replace')}")
    entry = listed.stdout.decode(errors="replace").rstrip("\0")
    return entry.partition("\t")[0].split(" ") if entry else None


def read_policy(repo: Path, commit: str, ref: str) -> Policy:
    """``.kodo/policy.toml`` at ``commit`` (the default policy if there is none).

    Raises PolicyError naming the file and the ref when it is not a regular file, too
    large, not TOML, or not a valid ``[policy]`` table.
    """
    where = f"{POLICY_PATH} at {ref} ({commit[:12]})"
    # A .kodo that is a symlink or a submodule hides the file from ls-tree: not "no policy".
    folder = _tree_entry(repo, commit, POLICY_DIR, where)
    if folder is not None and folder[:2] != ["040000", "tree"]:
        raise PolicyError(f"{where}: {POLICY_DIR} is not a directory ({folder[0]})")
    meta = _tree_entry(repo, commit, POLICY_PATH, where)
    if meta is None:
        return Policy()
    if len(meta) != 3 or meta[1] != "blob" or meta[0] not in ("100644", "100755"):
        raise PolicyError(f"{where} is not a regular file ({meta[0]})")
    blob = meta[2]
    size = _git(repo, "cat-file", "-s", blob)  # never load a huge blob to learn its size
    if size.returncode != 0 or int(size.stdout.strip() or 0) > POLICY_MAX_BYTES:
        raise PolicyError(f"{where} is larger than {POLICY_MAX_BYTES} bytes (or unreadable)")
    shown = _git(repo, "cat-file", "blob", blob)
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
        return policy_from_mapping(table, source=f"{ref}@{commit[:12]}:{POLICY_PATH}")
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from exc


def run_policy_at_submit(
    repo: Path, base_ref: str, base_commit: str, policy_ref: str | None
) -> Policy:
    """The strictest combination of the trusted ref's policy and ``base_ref``'s."""
    trusted_ref = policy_ref or default_branch(repo)
    trusted_commit = resolve_commit(repo, trusted_ref)
    if trusted_commit is None:
        raise PolicyError(f"the trusted policy ref {trusted_ref!r} names no commit in {repo}")
    trusted = read_policy(repo, trusted_commit, trusted_ref)
    at_base = read_policy(repo, base_commit, base_ref)
    return strictest(trusted, at_base)
