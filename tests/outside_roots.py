"""A repository outside KODO_REPO_ROOTS whose one commit a borrowing repository must never
read: the specs of what kodo lets a repository (or a delivery target) borrow."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Elsewhere:
    inside: Path  # the one root of KODO_REPO_ROOTS
    victim: Path  # a repository under no root
    secret: str  # its one commit, whose message is "elsewhere-secret"

    @property
    def objects(self) -> Path:
        return self.victim / ".git" / "objects"


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def elsewhere(tmp_path: Path) -> Elsewhere:
    """A root folder and, beside it, a repository with one commit ("elsewhere-secret")."""
    inside, outside = tmp_path / "roots", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    victim = outside / "v"
    git(tmp_path, "init", "-q", str(victim))
    identity = ("-c", "user.name=a", "-c", "user.email=a@b")
    git(victim, *identity, "commit", "-q", "--allow-empty", "-m", "elsewhere-secret")
    return Elsewhere(inside, victim, git(victim, "rev-parse", "HEAD").stdout.strip())
