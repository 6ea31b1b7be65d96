"""A local delivery target borrowing objects from outside KODO_REPO_ROOTS is refused
(red-team helper-115 on helpers 111 and 114).

Helper-111 made every store a *source* repository borrows from (objects/info/alternates,
as deep as git follows them) lie under the roots, at submit and in CompileST: "kodo
reads no repository no one allowed". The delivery target is a second repository kodo's
worker opens as itself: its receive-pack (run as the worker, HOOKLESS_RECEIVE_PACK)
reads the target's objects/info/alternates, advertises the borrowed store's refs
(running ``git for-each-ref`` inside that store) and checks the pushed branch's
connectivity against its objects. ``_refused_bare`` checks the target's entries
(foreign_entry), worktrees and config keys, but never its alternates: a target under the
roots naming ``/elsewhere/v/.git/objects`` is pushed to, and git there reads the outside
repository (the spec shows ``git cat-file`` in the target printing its commit).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.delivery import _refused_bare
from tests.outside_roots import elsewhere

pytestmark = pytest.mark.integration


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def test_a_target_borrowing_from_outside_the_roots_is_refused(tmp_path: Path) -> None:
    """Rule delivery_target (or git_dir): every store the target borrows from lies
    under KODO_REPO_ROOTS, as for the source repository."""
    found = elsewhere(tmp_path)
    inside, victim = found.inside, found.victim
    secret = found.secret
    target = inside / "deliveries.git"
    _git(tmp_path, "init", "-q", "--bare", str(target))
    (target / "objects" / "info" / "alternates").write_text(f"{victim / '.git' / 'objects'}\n")

    shown = _git(target, "cat-file", "-p", secret)  # git in the target reads the outside store
    assert "elsewhere-secret" in shown.stdout, shown.stderr

    why = _refused_bare(target, str(target), (inside,))
    assert why is not None, (
        f"a delivery target borrowing {victim}'s objects (outside the roots) is pushed to:"
        " its receive-pack, run as the worker, reads that repository"
    )
    assert why.startswith(("delivery_target", "git_dir")), why
    assert "alternates" in why or str(victim) in why, f"refused, but not for what it borrows: {why}"


def test_a_plain_bare_target_is_not_refused_for_kodo_s_own_overrides(tmp_path: Path) -> None:
    """The listing _refused_bare reads had held kodo's own command-scope keys (HARDENED's
    protocol.allow and protocol.file.allow, origin "command line:"), so transport_keys
    matched every target and no local delivery succeeded."""
    target = tmp_path / "roots" / "deliveries.git"
    target.parent.mkdir()
    _git(tmp_path, "init", "-q", "--bare", str(target))

    assert _refused_bare(target, str(target), (target.parent,)) is None
