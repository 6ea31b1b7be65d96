"""Red-team helper-133: kodo trusts predictable sibling folders of the workspaces folder.

Beside ``KODO_WORKSPACE_DIR`` kodo keeps ``<workspaces>.locks`` (the per-repository lock
files), ``<workspaces>.exec`` (verification's private checkouts and their indexes),
``<workspaces>.trash``, ``<workspaces>.stage`` and ``<workspaces>.stage.pin``. Their
names are derived, never configured, and they are made with ``mkdir(exist_ok=True)``:
one that already exists is used whoever owns it. When the workspaces folder lies in a
shared folder (``KODO_WORKSPACE_DIR=$(mktemp -d)``, i.e. ``/tmp/tmp.XXXX``: private
itself, but its name is listed in ``/tmp`` to everyone), any local user can create the
siblings first. ``repo_lock`` then opens ``<workspaces>.locks/<sha256(repo)[:16]>.lock``
with ``open("w")``, following a link: the attacker's symlink makes kodo (root, under
``kodo up`` on this host) truncate any file it names. (``fs.protected_symlinks`` does not
apply: the link is in the attacker's own folder, not a sticky one.) The same pre-made
``.exec`` folder receives every verification checkout, a copy of the repository, in a
folder the attacker owns.

The safe outcome: kodo makes its sibling folders itself, owner-only, and refuses one that
exists but is not its own (owner, mode, not a link); lock files are opened without
following links.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import GitError, ensure_worktree, exec_root, lock_file

pytestmark = pytest.mark.security

OTHER_UID = 65533
SIBLINGS = ("locks", "exec", "trash", "stage", "stage.pin")
PRECIOUS = "a root-owned file kodo has no business writing\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid with setpriv")


def as_other_user(script: str) -> None:
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    subprocess.run([*prefix, "sh", "-c", script], check=True, timeout=20, cwd="/")


@pytest.fixture
def dirs() -> Iterator[dict[str, Path]]:
    made = {
        "workspaces": Path(tempfile.mkdtemp(prefix="kodo-rt133-ws-")),  # `mktemp -d`: 0700
        "repos": Path(tempfile.mkdtemp(prefix="kodo-rt133-repos-")),
        "victim": Path(tempfile.mkdtemp(prefix="kodo-rt133-victim-")),
    }
    try:
        yield made
    finally:
        ws = made["workspaces"]
        siblings = [ws.with_name(f"{ws.name}.{name}") for name in SIBLINGS]
        for path in (*made.values(), *siblings):
            shutil.rmtree(path, ignore_errors=True)


def _head(repo: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@needs_root
def test_another_users_lock_folder_never_makes_kodo_truncate_a_file(
    dirs: dict[str, Path],
) -> None:
    workspaces = dirs["workspaces"]
    repo = create_sample_repo(dirs["repos"] / "calc")
    victim = dirs["victim"] / "precious.conf"
    victim.write_text(PRECIOUS)
    victim.chmod(0o644)

    lock = lock_file(workspaces, repo)  # its name: a hash of the repository's path
    as_other_user(
        f"mkdir -m 777 '{lock.parent}' && ln -s '{victim}' '{lock}'"
        f" && mkdir -m 777 '{exec_root(workspaces)}'"
    )
    assert lock.parent.stat().st_uid == OTHER_UID

    # Refusing the foreign folder is the safe outcome.
    with contextlib.suppress(GitError, OSError, RuntimeError):
        ensure_worktree(repo, workspaces, "run-rt133", _head(repo))

    assert victim.read_text() == PRECIOUS, (
        f"kodo opened {lock} (a link planted by uid {OTHER_UID}) for writing and truncated {victim}"
    )
