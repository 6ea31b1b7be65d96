"""Rule delivery_target: a delivery writes only into a repository under KODO_REPO_ROOTS,
as git opens it, not as the URL's path reads (red-team helper-107; each failed before
the push went from a scratch git dir to a checked bare target).

``_refused_target`` resolves the push URL's path and checks it lies under the roots, but
the repository git's local ``receive-pack`` then writes into is chosen by what it finds
there, all of it the owner's:

* ``<path>/.git`` as a ``gitdir:`` file (``enter_repo`` tries ``<path>/.git`` first and
  follows the file): the push lands in the repository that file names, anywhere;
* a target git dir whose ``refs/heads/kodo`` is a link out of the roots (rule git_dir is
  applied to the source repository only, never to the delivery target);
* ``receive.denyCurrentBranch=updateInstead`` with a worktree record
  (``worktrees/<id>/gitdir``) naming a folder outside the roots whose HEAD is the run's
  branch: receive-pack checks the agent's tree out into that folder, as the worker;
* the same ``updateInstead`` with a ``filter.<x>.smudge`` of the target's config: git
  runs that program, as the worker, outside any sandbox.

And the push itself goes past the checked URL: ``git push -- <url>`` applies
``url.<base>.pushInsteadOf`` to the URL given, which ``git ls-remote --get-url`` (the
idempotence check) never applies.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.delivery import deliver
from services.worker.git_ops import run_branch
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.owned_repos import branches as _branches
from tests.integration.worker.owned_repos import delivery_error as _delivery_error
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import listing as _listing
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


def test_a_target_whose_dot_git_file_names_a_repository_outside_the_roots_gets_nothing(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """The URL ``<repo>/deliveries`` lies under the roots; its ``.git`` is a ``gitdir:``
    file naming another tenant's repository outside them, which receives ``kodo/<run>``
    (git's receive-pack follows the file). Refused, naming delivery_target."""
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    target = repo / "deliveries"
    target.mkdir()
    (target / ".git").write_text(f"gitdir: {victim}\n")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(victim) == [], (
        f"kodo pushed into {victim}, outside KODO_REPO_ROOTS, through {target}/.git:"
        f" {_branches(victim)}"
    )
    assert "delivery_target: " in _delivery_error(rt, run_id)


def test_a_target_git_dir_with_a_link_gets_no_ref_written_through_it(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule git_dir holds for the delivery target too: a bare repository under the roots
    whose ``refs/heads/kodo`` is a link to a folder outside them gets ``<run>`` written
    there by receive-pack. Refused, naming a rule (git_dir or delivery_target)."""
    victim = tmp_path / "victim"  # any folder the worker can write, outside the roots
    victim.mkdir()
    before = _listing(victim)
    target = repo / "deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    (target / "refs" / "heads" / "kodo").symlink_to(victim)
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _listing(victim) == before, (
        f"the delivery wrote kodo's branch through {target}/refs/heads/kodo into {victim}:"
        f" {_listing(victim)}"
    )
    said = _delivery_error(rt, run_id)
    assert "git_dir: " in said or "delivery_target: " in said


def test_an_update_instead_target_checks_nothing_out_outside_the_roots(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """A target under the roots with ``receive.denyCurrentBranch=updateInstead`` and a
    worktree record whose HEAD is the run's branch and whose ``gitdir`` names a folder
    outside the roots: receive-pack (hookless, as the worker) runs ``read-tree -u -m``
    there and writes the agent's files into it. Refused, naming a rule."""
    outside = tmp_path / "home-of-the-worker"
    outside.mkdir()
    target = repo / "deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    _git(target, "config", "receive.denyCurrentBranch", "updateInstead")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    # the owner watches their own repository and sees the run's branch name
    record = target / "worktrees" / "w"
    record.mkdir(parents=True)
    (record / "HEAD").write_text(f"ref: refs/heads/{run_branch(run_id)}\n")
    (record / "commondir").write_text("../..\n")
    (record / "gitdir").write_text(f"{outside / '.git'}\n")
    deliver(rt, run_id)

    assert _listing(outside) == [], (
        f"receive-pack checked the run's tree out into {outside}, outside KODO_REPO_ROOTS:"
        f" {_listing(outside)}"
    )
    said = _delivery_error(rt, run_id)
    assert "git_dir: " in said or "delivery_target: " in said


def test_an_update_instead_target_s_filter_runs_no_program(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """git never runs a repository's code outside the sandbox: a target under the roots
    (a repository with a work tree, in the owner's own folder) whose config says
    ``receive.denyCurrentBranch=updateInstead``, whose HEAD is the run's branch and whose
    ``info/attributes`` gives every path a ``filter.x.smudge`` of its config: receive-pack
    checks the pushed tree out there and git runs the smudge program as the worker.
    HOOKLESS_RECEIVE_PACK blanks hooks, alternateRefsCommand and fsmonitor, not filters
    (nor the checkout itself)."""
    ran = tmp_path / "smudge-ran"
    target = repo / "deliveries"
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    _git(target, "config", "receive.denyCurrentBranch", "updateInstead")
    _git(target, "config", "filter.x.smudge", f"sh -c 'id -un >> {ran}'; cat")
    (target / ".git" / "info" / "attributes").write_text("* filter=x\n")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    _git(target, "symbolic-ref", "HEAD", f"refs/heads/{run_branch(run_id)}")
    deliver(rt, run_id)

    assert not ran.exists(), (
        "the delivery push made the target's receive-pack check the run out and run its"
        f" smudge filter as {ran.read_text().strip()!r}, outside any sandbox"
    )
    said = _delivery_error(rt, run_id)
    assert "git_dir: " in said or "delivery_target: " in said


def test_a_push_insteadof_chain_does_not_move_the_push_past_the_checked_url(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target: the push goes to the URL checked. ``git remote get-url
    --push`` rewrites the remote's URL once (``url.<U>.pushInsteadOf = <X>``: U, under the
    roots, is checked); kodo then makes sure git would not rewrite U again with ``git
    ls-remote --get-url``, which applies ``insteadOf`` only. ``git push -- U`` applies
    ``pushInsteadOf`` to U as well: a second rule ``url.<V>.pushInsteadOf = <U>`` sends
    the push to V, outside the roots."""
    inside = repo.parent / "calc-deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(inside)], check=True)
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    _git(repo, "remote", "add", "origin", "/nowhere/deliveries")
    _git(repo, "config", f"url.{inside}.pushInsteadOf", "/nowhere/deliveries")
    _git(repo, "config", f"url.{victim}.pushInsteadOf", str(inside))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo, inside))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(victim) == [], (
        f"the push went to {victim}, outside KODO_REPO_ROOTS, not to the URL kodo checked"
        f" ({inside}): {_branches(victim)}"
    )


def test_a_network_url_rewritten_to_a_path_at_push_time_runs_no_hook(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target: a delivery never runs a hook of a repository on this
    machine. With KODO_DELIVER_PROTOCOLS allowing https (the operator's forge), the
    checked URL ``https://forge.invalid/calc.git`` is a network one (no root check, no
    hookless receive-pack); ``git push -- <url>`` then applies the repository's
    ``url.<path>.pushInsteadOf = https://forge.invalid/`` and pushes to a bare repository
    on this machine, outside the roots, whose hooks git runs as the worker."""
    ran = tmp_path / "hooks-ran"
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    for hook in ("pre-receive", "update", "post-receive"):
        script = victim / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho {hook} ran as $(id -un) >> {ran}\n")
        script.chmod(0o755)
    _git(repo, "remote", "add", "origin", "https://forge.invalid/calc.git")
    _git(repo, "config", f"url.{victim}.pushInsteadOf", "https://forge.invalid/calc.git")
    # get-url --push rewrites the remote's URL once; an insteadOf sends the remote's own
    # URL to the network one, pushInsteadOf then applies to it at push time only
    _git(repo, "remote", "set-url", "origin", "forge:calc")
    _git(repo, "config", "url.https://forge.invalid/calc.git.insteadOf", "forge:calc")

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,), deliver_protocols=("file", "https"))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert not ran.exists(), (
        "the push to the checked network URL went to a path on this machine and ran its"
        f" hooks as the worker:\n{ran.read_text()}"
    )
    assert _branches(victim) == []


def test_a_remote_named_like_the_checked_url_does_not_take_the_push(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target: the push goes to the URL checked. ``git push -- <url>``
    first looks for a configured remote *named* ``<url>``: the owner's config has
    ``origin`` at ``../calc-deliveries.git`` (under the roots: checked, passed) and also
    a remote named ``../calc-deliveries.git`` whose ``url`` is that same path (so
    ``git ls-remote --get-url`` reads it back unchanged) and whose ``pushurl`` is a
    repository outside the roots, which receives the branch."""
    inside = repo.parent / "calc-deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(inside)], check=True)
    victim = tmp_path / "elsewhere" / "victim.git"
    victim.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(victim)], check=True)
    _git(repo, "remote", "add", "origin", "../calc-deliveries.git")
    _git(repo, "config", "remote.../calc-deliveries.git.url", "../calc-deliveries.git")
    _git(repo, "config", "remote.../calc-deliveries.git.pushurl", str(victim))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo, inside))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert _branches(victim) == [], (
        f"the push went to {victim}, outside KODO_REPO_ROOTS, through a remote named like"
        f" the URL kodo checked ({inside}): {_branches(victim)}"
    )
