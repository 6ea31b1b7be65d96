"""Red-team helper-133: a run's worktree is a world-readable copy of a private repository.

kodo checks a run's base commit out into ``<workspaces>/<run_id>`` (``ensure_worktree``).
The workspaces folder is made with the process umask (0755: ``.kodo`` beside the checkout,
or ``KODO_WORKSPACE_DIR``), and so is every file in it (0644). A repository its owner keeps
private (under a 0700 folder, as a home directory usually is) is thereby copied, every
tracked file, where any local account can read it, for as long as the worktree lives
(delivery keeps it until cleanup). The same holds for the private checkouts verification
runs on.

The safe outcome: what kodo copies out of a repository is no more readable by other local
users than the repository was: the workspaces folder is 0700 (kodo's own uid, and the
daemon it starts as that uid, are the only readers it needs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import ensure_worktree

pytestmark = pytest.mark.security

OTHER_UID = 65533
SECRET = "rt133-private-source-line"  # noqa: S105 - made up, to look for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid with setpriv")


def as_other_user(argv: list[str]) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    return subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=20, check=False, cwd="/"
    )


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kodo-rt133-wt-"))
    path.chmod(0o755)  # like /home: others may pass through
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=o", "-c", "user.email=o@example.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@needs_root
def test_a_private_repositorys_worktree_is_not_readable_by_another_local_user(
    base: Path,
) -> None:
    private = base / "alice"
    private.mkdir(mode=0o700)  # alice's home: nobody else gets in
    repo = create_sample_repo(private / "calc")
    (repo / "secret_sauce.py").write_text(f"RECIPE = {SECRET!r}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "private")
    head = _git(repo, "rev-parse", "HEAD")
    assert as_other_user(["cat", str(repo / "secret_sauce.py")]).returncode != 0

    workspaces = base / ".kodo" / "workspaces"  # kodo up: <KODO_HOME>/workspaces
    tree = ensure_worktree(repo, workspaces, "run-rt133", head)

    copied = tree.path / "secret_sauce.py"
    assert SECRET in copied.read_text()
    got = as_other_user(["cat", str(copied)])
    assert SECRET not in got.stdout, (
        f"uid {OTHER_UID} read {copied} (folder {workspaces} mode "
        f"{workspaces.stat().st_mode & 0o777:o}), a copy of a file it could not read"
    )
