"""Rule git_dir checks the whole git dir, and rule delivery_target the URL git pushes to
(red-team helper-105; each failed on the code that checked less).

git_dir (shared.git_dir): kodo refuses a git dir whose ``objects``, ``refs``,
``refs/heads``, ``worktrees``, ``info`` or ``logs`` is a link, but git follows a link at
any depth. kodo's branch is ``refs/heads/kodo/<run>`` (reflog
``logs/refs/heads/kodo/<run>``): a repository whose ``.git/refs/heads/kodo`` is a link to
any folder kodo's user can write gets kodo's ref written (and, at cleanup, deleted) there.

delivery_target (services.worker.delivery._refused_target): kodo lists the remote's
push URLs with ``git remote get-url --push --all`` and then runs ``git push -- <remote>``,
which reads the repository's config again and:

* with no remote of that name configured, takes the name for a path relative to the
  repository (``<repo>/origin``): ``get-url`` failed, so kodo had no URL to check, added
  no hookless receive-pack, and git ran that repository's hooks as the worker;
* with ``file://…/x#y``, pushes to the path ``…/x#y`` while kodo checked
  ``urlsplit().path`` (``…/x``, the fragment cut off);
* with the URL changed between the listing and the push, pushes to the new one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from services.worker import delivery, repo_upkeep
from services.worker.delivery import deliver
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import RuntimeFactory, approve, new_run
from tests.integration.worker.owned_repos import branches as _branches
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import listing as _listing
from tests.integration.worker.owned_repos import run_column as _run_column
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


def _hooked_bare(path: Path, ran: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    for hook in ("pre-receive", "update", "post-receive", "post-update"):
        script = path / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho {hook} ran as $(id -un) >> {ran}\n")
        script.chmod(0o755)
    return path


# --- rule git_dir -----------------------------------------------------------------------


@pytest.mark.parametrize("linked", ["refs/heads/kodo", "logs/refs/heads/kodo"])
def test_a_link_below_the_checked_entries_gets_no_ref_written_through_it(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path, linked: str
) -> None:
    """Rule git_dir: kodo writes a run's branch (and its reflog) only inside the
    repository's own git dir; a ``.git/refs/heads/kodo`` (or ``.git/logs/refs/heads/kodo``)
    that is a link out of it fails the run closed, naming git_dir. Today only the first
    level (``refs``, ``refs/heads``, ``logs``...) is checked and git writes
    ``kodo/<run>`` into the linked folder, outside KODO_REPO_ROOTS."""
    victim = tmp_path / "victim"  # under no root: the roots are the repository alone
    victim.mkdir()
    (victim / "keep.txt").write_text("another tenant's folder\n")
    before = _listing(victim)
    (repo / ".git" / linked).parent.mkdir(parents=True, exist_ok=True)
    (repo / ".git" / linked).symlink_to(victim)

    rt = make_rt(repo_roots=(repo,))
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    outcome = run_step(rt, StepId.COMPILE, run_id, compile_step)

    assert _listing(victim) == before, (
        f"CompileST ({outcome}) wrote kodo's branch through .git/{linked} into {victim},"
        f" outside KODO_REPO_ROOTS: {_listing(victim)}"
    )
    assert outcome == "failed"
    assert "git_dir: " in (_run_column(rt, run_id, "error") or "")


# --- rule delivery_target ---------------------------------------------------------------


def test_a_delivery_remote_the_repository_does_not_configure_runs_no_hook(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target: a delivery never runs a hook of a repository on this
    machine. With no ``origin`` remote configured, ``git remote get-url`` fails, kodo
    checks no URL and adds no hookless receive-pack, and ``git push -- origin`` takes
    ``origin`` for the path ``<repo>/origin``: a bare repository the owner put in the
    work tree, whose hooks git runs as the worker (outside any sandbox). It must be
    refused, naming delivery_target."""
    ran = tmp_path / "hooks-ran"
    rt = make_rt(deliver_remote="origin")
    run_id = _succeeded(rt, repo)
    _hooked_bare(repo / "origin", ran)  # the owner's own work tree; no remote configured

    deliver(rt, run_id)

    assert not ran.exists(), (
        "git push took the unconfigured remote's name for a path and ran that repository's"
        f" hooks as the worker:\n{ran.read_text()}"
    )
    assert "delivery_target: " in (_run_column(rt, run_id, "delivery_error") or "")


def test_a_file_url_fragment_does_not_hide_where_the_push_goes(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target: a ``file://`` push URL must lie under KODO_REPO_ROOTS as git
    reads it. kodo checks ``urlsplit(url).path``, which drops ``#...``; git pushes to the
    whole path ``<repo>/out#x``, a link the owner made to a repository outside the
    roots, which then receives ``kodo/<run>``."""
    elsewhere = tmp_path / "elsewhere" / "victim.git"  # under no root of the run's
    elsewhere.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(elsewhere)], check=True)
    (repo / "out#x").symlink_to(elsewhere)
    _git(repo, "remote", "add", "origin", f"file://{repo}/out#x")

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(elsewhere) == [], (
        f"kodo pushed into {elsewhere}, outside KODO_REPO_ROOTS: {_branches(elsewhere)}"
    )
    assert "delivery_target: " in (_run_column(rt, run_id, "delivery_error") or "")


def test_the_push_goes_to_the_url_that_was_checked(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule delivery_target: the push goes where the check looked. kodo lists the URLs
    (one git call), checks them, then runs ``git push -- <remote>`` (another git call,
    which reads ``.git/config`` again). The repository's owner may rewrite their own
    config at any moment: here right after the check, to a repository outside the
    roots, which receives the branch (and, had the checked URL been a network one, the
    push would also have run without the hookless receive-pack)."""
    inside = repo.parent / "calc-deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(inside)], check=True)
    elsewhere = tmp_path / "elsewhere" / "victim.git"
    elsewhere.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(elsewhere)], check=True)
    _git(repo, "remote", "add", "origin", str(inside))

    checked = delivery._refused_target

    def the_owner_edits_the_config_right_after_the_check(*args, **kwargs):  # type: ignore[no-untyped-def]
        said = checked(*args, **kwargs)
        _git(repo, "remote", "set-url", "origin", str(elsewhere))
        return said

    monkeypatch.setattr(
        delivery, "_refused_target", the_owner_edits_the_config_right_after_the_check
    )
    rt = make_rt(deliver_remote="origin", repo_roots=(repo, inside))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(elsewhere) == [], (
        f"the push went to {elsewhere}, outside KODO_REPO_ROOTS, not to the URL kodo"
        f" checked ({inside}): {_branches(elsewhere)}"
    )


def test_object_folders_that_are_links_get_no_object_of_the_run_written_there(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule git_dir: kodo (git's commit and ``git_ops.admit``'s hard links) writes a run's
    objects only into the repository's own object store; a ``.git/objects/<xx>`` fan-out
    folder that is a link out of it fails the run closed, naming git_dir. Today only
    ``objects`` itself is checked: the owner links all 256 fan-out folders to a folder
    outside KODO_REPO_ROOTS (git reads its own objects through them as before), and every
    object the run admits from its quarantine (``git_ops.admit``, unsandboxed) lands
    there."""
    victim = tmp_path / "victim"  # under no root: the roots are the repository alone
    victim.mkdir()
    rt = make_rt(repo_roots=(repo,))
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    approve(rt, run_id)

    # between two steps, the owner links every fan-out folder of their own store out
    store = repo / ".git" / "objects"
    for n in range(256):  # the ones git has not made yet: its own objects stay readable
        fan = store / f"{n:02x}"
        if not fan.exists():
            (victim / fan.name).mkdir()
            fan.symlink_to(victim / fan.name)
    before = _listing(victim)
    outcome = run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step)

    written = sorted(set(_listing(victim)) - set(before))
    assert written == [], (
        f"the run ({outcome}) wrote objects through .git/objects/<xx> into {victim},"
        f" outside KODO_REPO_ROOTS: {written[:5]}"
    )
    assert outcome == "failed"
    assert "git_dir: " in (_run_column(rt, run_id, "error") or "")


def test_the_gc_after_a_cleanup_never_prunes_through_object_folder_links(
    repo: Path, tmp_path: Path
) -> None:
    """Rule git_dir: the ``git gc --auto`` kodo runs in a repository after a cleanup
    (``repo_upkeep.pack_if_due``, unsandboxed, as the worker) deletes nothing outside the
    repository's git dir. The owner packs their own objects, then links every
    ``.git/objects/<xx>`` fan-out folder to another repository's (outside the roots,
    writable by kodo's user, not by the owner) and sets ``gc.autoPackLimit=1``: gc's
    ``git prune`` takes that repository's loose objects for this one's unreachable ones
    and deletes every one older than the two weeks kodo keeps, corrupting it. Only
    ``objects`` itself is checked today, not the folders under it."""
    victim = tmp_path / "elsewhere" / "victim"  # another tenant's repository
    victim.mkdir(parents=True)
    _git(victim, "init", "-q", "-b", "main")
    (victim / "work.py").write_text("print('precious')\n")
    _git(victim, "add", "work.py")
    _git(victim, "commit", "-q", "-m", "precious work")
    month_ago = time.time() - 30 * 86400
    victim_store = victim / ".git" / "objects"
    for loose in victim_store.glob("??/*"):  # written a month ago, never packed
        os.utime(loose, (month_ago, month_ago))
    before = sorted(str(p.relative_to(victim_store)) for p in victim_store.glob("??/*"))
    assert before

    _git(repo, "repack", "-adq")  # the owner's objects in a pack; no fan-out folder left
    _git(repo, "prune-packed")
    store = repo / ".git" / "objects"
    for n in range(256):
        fan = f"{n:02x}"
        if (store / fan).is_dir():
            (store / fan).rmdir()
        (victim_store / fan).mkdir(exist_ok=True)
        (store / fan).symlink_to(victim_store / fan)
    _git(repo, "config", "gc.autoPackLimit", "1")
    (repo / "pad.txt").write_text("pad\n")
    _git(repo, "add", "pad.txt")
    _git(repo, "commit", "-q", "-m", "pad")
    _git(repo, "repack", "-q")  # two packs: past gc.autoPackLimit, so `gc --auto` packs

    try:
        said = repo_upkeep.pack_if_due(repo)
    except RuntimeError as exc:  # refusing the repository is a fix
        said = str(exc)

    after = sorted(str(p.relative_to(victim_store)) for p in victim_store.glob("??/*"))
    assert set(before) <= set(after), (
        f"gc --auto in the repository ({said!r}) deleted another repository's objects"
        f" through .git/objects/<xx>: {sorted(set(before) - set(after))}"
    )
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=victim, capture_output=True)
    assert fsck.returncode == 0, fsck.stderr.decode()[-500:]


def test_a_local_delivery_target_s_config_runs_no_program(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target (git never runs a repository's code outside the sandbox): a
    push to a repository on this machine runs its ``receive-pack`` as the worker with
    only ``-c core.hooksPath=/dev/null`` (HOOKLESS_RECEIVE_PACK); git drops kodo's
    hardening for a local transport, so the target's own config still decides what
    receive-pack runs. A target under KODO_REPO_ROOTS (here a bare repository the owner
    keeps in their own folder) with ``objects/info/alternates`` and
    ``core.alternateRefsCommand`` has that command run, as the worker, when receive-pack
    advertises its refs."""
    ran = tmp_path / "command-ran"
    target = repo / "deliveries.git"  # under the roots: the owner's own folder
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    lender = repo / "lender.git"
    subprocess.run(["git", "init", "-q", "--bare", str(lender)], check=True)
    (target / "objects" / "info" / "alternates").write_text(f"{lender / 'objects'}\n")
    _git(target, "config", "core.alternateRefsCommand", f"id -un >> {ran}; true")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert not ran.exists(), (
        "the delivery push ran the target repository's core.alternateRefsCommand as"
        f" {ran.read_text().strip()}, outside any sandbox"
    )


def test_the_gc_after_a_cleanup_never_rewrites_a_packed_refs_link(
    repo: Path, tmp_path: Path
) -> None:
    """Rule git_dir: the ``git gc --auto`` kodo runs after a cleanup (unsandboxed, as the
    worker) writes only inside the repository's own git dir. ``.git/packed-refs`` is not
    among the entries checked: the owner links it to another repository's (outside the
    roots, writable by kodo's user only), and gc's ``pack-refs`` rewrites that file
    through the link with this repository's branches, so the other repository's ``main``
    names a commit it does not have."""
    victim = tmp_path / "elsewhere" / "victim"  # another tenant's repository
    victim.mkdir(parents=True)
    _git(victim, "init", "-q", "-b", "main")
    (victim / "work.py").write_text("print('precious')\n")
    _git(victim, "add", "work.py")
    _git(victim, "commit", "-q", "-m", "precious work")
    _git(victim, "pack-refs", "--all")
    packed = victim / ".git" / "packed-refs"
    before = packed.read_bytes()

    (repo / ".git" / "packed-refs").unlink(missing_ok=True)
    (repo / ".git" / "packed-refs").symlink_to(packed)
    _git(repo, "config", "gc.autoPackLimit", "1")
    for n in range(2):  # two packs: past gc.autoPackLimit, so `gc --auto` packs
        (repo / f"pad{n}.txt").write_text(f"pad {n}\n")
        _git(repo, "add", f"pad{n}.txt")
        _git(repo, "commit", "-q", "-m", f"pad {n}")
        _git(repo, "repack", "-q")

    try:
        said = repo_upkeep.pack_if_due(repo)
    except RuntimeError as exc:  # refusing the repository is a fix
        said = str(exc)

    assert packed.read_bytes() == before, (
        f"gc --auto in the repository ({said!r}) rewrote {packed} through"
        f" .git/packed-refs:\n{packed.read_text()}"
    )
