"""git never runs the repository's code: planted hooks, drivers and monitors stay inert.

Each attack is planted in the source repository (as a hostile command or a hostile
clone would), shown to fire under plain git, then driven through kodo's own path:
ensure_worktree, a git apply (tests/integration/worker/patching.py), commit_index, the
diffs later steps read, the policy read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    GitError,
    commit_index,
    committed_patch,
    ensure_worktree,
    git,
)
from shared import gitcmd
from shared.domain.policy import MAX_PATCH_BYTES
from shared.gitcmd import command_keys, hardened_args
from shared.service.repo_pin import PolicyCache, observe_repo, pin_submission
from tests.integration.worker.patching import try_apply

pytestmark = pytest.mark.integration

PATCH = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -3,3 +3,7 @@\n \n def add(a: int, b: int) -> int:\n     return a + b\n"
    "+\n+\n+def sub(a: int, b: int) -> int:\n+    return a - b\n"
)
IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost"]


def plain_git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as a user would run it: the repository's config and hooks apply."""
    return subprocess.run(
        ["git", *IDENT, *args], cwd=repo, capture_output=True, text=True, check=False
    )


def evil(tmp_path: Path, name: str) -> str:
    """A command that leaves evidence (a file named ``name``) if it ever runs."""
    return f"touch {tmp_path / 'ran' / name}"


def ran(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "ran").iterdir())


def kodo_path(repo: Path, workspace: Path, run_id: str = "run-1") -> Path:
    """Everything kodo's steps do with git on a run, in order."""
    tree = ensure_worktree(repo, workspace, run_id, "HEAD")
    wt = tree.path
    assert try_apply(wt, PATCH) is None
    commit_index(tree, "kodo: apply\n\nKodo-Run: run-1")
    git(wt, "status", "--porcelain")
    git(wt, "diff", "--stat", "HEAD~1", "HEAD")
    git(wt, "log", "-p", "-1")
    git(wt, "show", "HEAD")
    pin = observe_repo(repo)
    assert pin is not None
    pin_submission(pin, "HEAD", None, cache=PolicyCache())  # a fresh cache: git reads it
    return wt


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "ran").mkdir()
    return create_sample_repo(tmp_path / "calc")


HOOKS = ("post-checkout", "pre-commit", "post-commit", "reference-transaction", "pre-auto-gc")


def test_planted_hooks_never_run(repo: Path, tmp_path: Path) -> None:
    for hook in HOOKS:
        script = repo / ".git" / "hooks" / hook
        script.write_text(f"#!/bin/sh\n{evil(tmp_path, hook)}\n")
        script.chmod(0o755)
    plain_git(repo, "commit", "-q", "--allow-empty", "-m", "hooks fire for plain git")
    assert {"pre-commit", "post-commit", "reference-transaction"} <= set(ran(tmp_path))
    for stale in (tmp_path / "ran").iterdir():
        stale.unlink()

    kodo_path(repo, tmp_path / "ws")
    assert ran(tmp_path) == []


def test_a_hooks_path_set_in_the_repository_config_is_ignored(repo: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "elsewhere"
    hooks.mkdir()
    for hook in HOOKS:
        (hooks / hook).write_text(f"#!/bin/sh\n{evil(tmp_path, hook)}\n")
        (hooks / hook).chmod(0o755)
    plain_git(repo, "config", "core.hooksPath", str(hooks))
    kodo_path(repo, tmp_path / "ws")
    assert ran(tmp_path) == []


def test_filter_drivers_from_the_repository_config_never_run(repo: Path, tmp_path: Path) -> None:
    (repo / ".gitattributes").write_text("* filter=evil diff=evil merge=evil\n")
    plain_git(repo, "add", ".gitattributes")
    plain_git(repo, "commit", "-q", "-m", "attributes")
    for key, value in (
        ("filter.evil.clean", evil(tmp_path, "clean")),
        ("filter.evil.smudge", evil(tmp_path, "smudge")),
        ("filter.evil.process", evil(tmp_path, "process")),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", evil(tmp_path, "textconv")),
        ("diff.evil.command", evil(tmp_path, "diff-command")),
        ("diff.external", evil(tmp_path, "external")),
        ("merge.evil.driver", evil(tmp_path, "merge")),
        ("core.fsmonitor", evil(tmp_path, "fsmonitor")),
        ("core.pager", evil(tmp_path, "pager")),
    ):
        plain_git(repo, "config", key, value)
    (repo / "new.txt").write_text("x\n")
    plain_git(repo, "add", "new.txt")  # plain git runs the planted drivers
    assert ran(tmp_path), "the planted drivers fire for plain git"
    plain_git(repo, "reset", "-q", "--hard")
    for stale in (tmp_path / "ran").iterdir():
        stale.unlink()

    kodo_path(repo, tmp_path / "ws")
    assert ran(tmp_path) == []


def test_config_keys_that_name_programs_are_recognised() -> None:
    names = [
        "core.bare",
        "filter.lfs.clean",
        "filter.a=b c.smudge",
        "filter.x.process",
        "diff.x.textconv",
        "diff.x.command",
        "merge.x.driver",
        "alias.st",
        "remote.origin.uploadpack",
        "user.name",
    ]
    assert command_keys(names) == [
        "filter.lfs.clean",
        "filter.a=b c.smudge",
        "filter.x.process",
        "diff.x.textconv",
        "diff.x.command",
        "merge.x.driver",
        "alias.st",
        "remote.origin.uploadpack",
    ]


def test_diffing_commands_never_use_external_diff_or_textconv() -> None:
    assert hardened_args(["diff", "--stat", "A", "B"]) == [
        "diff",
        "--no-ext-diff",
        "--no-textconv",
        "--ignore-submodules=dirty",
        "--stat",
        "A",
        "B",
    ]
    assert hardened_args(["status"]) == ["status", "--ignore-submodules=dirty"]


def count_git(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """From now on, the argv of every git process kodo starts (config listings, and those
    whose output is read as it comes, too)."""
    started: list[list[str]] = []
    spawn = gitcmd._git_process

    def counting(cwd: Path, args: list[str], *rest: object) -> object:
        started.append(list(args))
        return spawn(cwd, args, *rest)  # type: ignore[arg-type]

    opening = gitcmd.HardenedGit.open

    def counting_streams(self: gitcmd.HardenedGit, args: list[str]) -> object:
        started.append(gitcmd.hardened_args(args))  # output read as it comes
        return opening(self, args)

    monkeypatch.setattr(gitcmd, "_git_process", counting)
    monkeypatch.setattr(gitcmd.HardenedGit, "open", counting_streams)
    return started


def _evil_filter(repo: Path, tmp_path: Path) -> None:
    """Make every file pass through a filter named ``evil`` (not yet configured)."""
    (repo / ".gitattributes").write_text("* filter=evil\n")
    plain_git(repo, "add", ".gitattributes")
    plain_git(repo, "commit", "-q", "-m", "attributes")


def _stage_new_file(wt: Path, name: str) -> None:
    (wt / name).write_text("x\n")
    git(wt, "add", name)


def test_a_command_key_added_after_a_listing_was_reused_is_still_blanked(
    repo: Path, tmp_path: Path
) -> None:
    """kodo reuses a config listing while the config files are unchanged; git writes
    its config by renaming a new file over it, so the next call lists it again."""
    _evil_filter(repo, tmp_path)
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    _stage_new_file(wt, "a.txt")  # listed: no filter configured yet
    plain_git(repo, "config", "filter.evil.clean", evil(tmp_path, "clean"))
    _stage_new_file(wt, "b.txt")
    assert ran(tmp_path) == []


def test_a_config_written_in_place_is_listed_again(repo: Path, tmp_path: Path) -> None:
    """An editor that rewrites the file in place keeps its inode; its ctime moves."""
    _evil_filter(repo, tmp_path)
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    _stage_new_file(wt, "a.txt")
    with (repo / ".git" / "config").open("a") as config:
        config.write(f'[filter "evil"]\n\tclean = {evil(tmp_path, "clean")}\n')
    _stage_new_file(wt, "b.txt")
    assert ran(tmp_path) == []


def test_a_config_that_includes_another_file_is_listed_every_time(
    repo: Path, tmp_path: Path
) -> None:
    """The included file is not among those kodo watches: no listing is reused."""
    _evil_filter(repo, tmp_path)
    included = tmp_path / "included.cfg"
    included.write_text("")
    plain_git(repo, "config", "include.path", str(included))
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    _stage_new_file(wt, "a.txt")
    included.write_text(f'[filter "evil"]\n\tclean = {evil(tmp_path, "clean")}\n')
    _stage_new_file(wt, "b.txt")
    assert ran(tmp_path) == []


def test_the_worktrees_of_one_repository_share_its_config_listing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They read the same config file (reached through ``../..``): one listing serves all."""
    first = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    git(first, "status", "--porcelain")  # lists the common config
    second = ensure_worktree(repo, tmp_path / "ws", "run-2", "HEAD").path
    started = count_git(monkeypatch)
    git(second, "status", "--porcelain")
    assert [args[0] for args in started] == ["status"]


def test_an_unchanged_config_is_listed_once(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consecutive calls in one worktree start one git process each, not two."""
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    git(wt, "status", "--porcelain")  # lists the config once
    started = count_git(monkeypatch)
    for _ in range(3):
        git(wt, "status", "--porcelain")
    assert [args[0] for args in started] == ["status", "status", "status"]


def test_a_call_in_a_worktrees_git_dir_shares_the_worktrees_listing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patch is read in the worktree's git dir (no attributes): git reads the same
    two files there as in the worktree, so the worktree's listing serves it."""
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / "calc.py").write_text("changed = True\n")
    git(wt, "add", "calc.py")
    commit_index(tree, "change")  # lists the config for the worktree
    admin = Path((wt / ".git").read_text().removeprefix("gitdir: ").strip())
    assert gitcmd._config_identity(admin) == gitcmd._config_identity(wt)
    started = count_git(monkeypatch)
    assert b"changed = True" in committed_patch(tree, max_bytes=MAX_PATCH_BYTES).diff
    # one diff in the git dir with no work tree (HEAD~1 and HEAD named as they are, no
    # rev-parse first); no listing of its own
    assert [args[:1] for args in started] == [["--bare"]]
    assert [next(a for a in args if not a.startswith("-")) for args in started] == ["diff"]


def test_a_git_dir_git_might_not_take_for_one_is_not_cached(repo: Path, tmp_path: Path) -> None:
    """With a HEAD git refuses, git walks up and reads other files: no identity."""
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    admin = Path((wt / ".git").read_text().removeprefix("gitdir: ").strip())
    head = (admin / "HEAD").read_text()
    (admin / "HEAD").write_text("not a ref\n")
    assert gitcmd._config_identity(admin) is None
    (admin / "HEAD").write_text(head)
    (admin / "gitdir").rename(tmp_path / "gitdir.away")
    assert gitcmd._config_identity(admin) is None
    (tmp_path / "gitdir.away").rename(admin / "gitdir")
    assert gitcmd._config_identity(admin) == gitcmd._config_identity(wt)
    assert gitcmd._config_identity(repo / ".git") is None  # the main git dir: not cached

    # commondir naming another repository: git reads that one's config, kodo caches nothing
    other = create_sample_repo(tmp_path / "other")
    commondir = (admin / "commondir").read_text()
    (admin / "commondir").write_text(f"{other / '.git'}\n")
    assert gitcmd._config_identity(admin) is None
    (admin / "commondir").write_text(commondir)
    # a look-alike folder outside a common dir's worktrees/ (git would walk up from it)
    lookalike = tmp_path / "elsewhere" / "x"
    shutil.copytree(admin, lookalike)
    assert gitcmd._config_identity(lookalike) is None


def test_a_listing_taken_while_git_walks_past_a_broken_head_is_never_reused(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a HEAD git cannot read, git walks up (or finds no repository) and lists no
    config of this one, while the files the cache keys on are unchanged. A listing
    taken then, reused by the repository's linked worktrees (which share the key) or
    once HEAD is back, would leave the filter's command unblanked."""
    _evil_filter(repo, tmp_path)
    plain_git(repo, "config", "filter.evil.clean", evil(tmp_path, "clean"))
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    monkeypatch.setattr(gitcmd, "_LISTINGS", {})  # a worker that listed nothing yet
    head = (repo / ".git" / "HEAD").read_bytes()
    (repo / ".git" / "HEAD").write_bytes(b"junk\n")
    assert gitcmd._config_identity(repo) is None
    gitcmd.run_git(repo, ["status", "--porcelain"])  # listed outside any repository
    _stage_new_file(wt, "a.txt")  # the worktree is a repository still: its filter runs
    (repo / ".git" / "HEAD").write_bytes(head)
    (repo / "b.txt").write_text("x\n")
    gitcmd.run_git(repo, ["add", "b.txt"])
    assert ran(tmp_path) == []


def test_a_listing_cached_before_its_head_broke_is_not_used_after(
    repo: Path, tmp_path: Path
) -> None:
    """The reverse: a nested repository's listing is cached; once its HEAD breaks, git
    in it reads the outer repository's config, whose filter must be blanked."""
    outer = tmp_path / "outer"
    outer.mkdir()
    plain_git(outer, "init", "-q")
    (outer / ".gitattributes").write_text("* filter=outer\n")
    plain_git(outer, "config", "filter.outer.clean", evil(tmp_path, "outer-clean"))
    inner = outer / "inner"
    shutil.copytree(repo, inner)
    gitcmd.run_git(inner, ["status", "--porcelain"])  # the inner listing, cached
    (inner / ".git" / "HEAD").write_bytes(b"junk\n")
    assert gitcmd._config_identity(inner) is None
    (inner / "c.txt").write_text("x\n")
    gitcmd.run_git(inner, ["add", "c.txt"])  # git reads the outer config now
    assert ran(tmp_path) == []


def test_a_listing_of_a_worktree_git_calls_dubious_is_not_cached(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git refuses a worktree another uid owns (dubious ownership) and lists no
    repository config, exiting 0, while the keyed files are the ones every worktree of
    the repository shares (the sandbox lends kodo's checkouts to its uid): that empty
    listing must not serve the repository's next call."""
    if os.geteuid() != 0:
        pytest.skip("giving a worktree to another uid needs root")
    _evil_filter(repo, tmp_path)
    plain_git(repo, "config", "filter.evil.clean", evil(tmp_path, "clean"))
    lent = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    subprocess.run(["chown", "-R", "65534:65534", "--", str(lent)], check=True)
    monkeypatch.setattr(gitcmd, "_LISTINGS", {})  # a worker that listed nothing yet
    gitcmd.run_git(lent, ["status", "--porcelain"])  # refused: dubious ownership
    (repo / "b.txt").write_text("x\n")
    gitcmd.run_git(repo, ["add", "b.txt"])
    assert ran(tmp_path) == []


def test_a_later_delivery_reuses_its_worktree_without_asking_git(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    started = count_git(monkeypatch)
    again = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    assert again == made
    assert started == []


def test_a_worktree_moved_to_another_branch_is_refused(repo: Path, tmp_path: Path) -> None:
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    plain_git(wt, "checkout", "-q", "-b", "elsewhere")
    with pytest.raises(GitError, match="is on elsewhere, expected kodo/run-1"):
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")


def test_a_worktree_whose_pointer_was_rewritten_is_judged_by_git_not_by_its_files(
    repo: Path, tmp_path: Path
) -> None:
    """A .git pointer that is not git's own is never read for the fast path."""
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    fake = tmp_path / "fake-admin"
    fake.mkdir()
    (fake / "HEAD").write_text("ref: refs/heads/kodo/run-1\n")
    plain_git(wt, "checkout", "-q", "-b", "elsewhere")
    real = (wt / ".git").read_text()
    (wt / ".git").write_text(f"gitdir: {fake}\n")
    with pytest.raises(GitError):  # git itself finds no repository there
        ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    (wt / ".git").write_text(real)


def test_pointers_are_read_as_git_reads_them_or_not_cached(repo: Path, tmp_path: Path) -> None:
    """The listing cache keys on the files git will read: where kodo's reading of a
    ``.git`` file or a ``commondir`` could differ from git's, nothing is cached."""
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    clean = gitcmd._config_identity(wt)
    assert clean is not None
    assert clean[0] is not None
    pointer = (wt / ".git").read_text()
    admin = Path(pointer.removeprefix("gitdir: ").strip())

    (wt / ".git").write_text(pointer.rstrip("\n") + "\r\n")  # git drops CR and LF
    assert gitcmd._config_identity(wt) == clean
    (wt / ".git").write_text(pointer.rstrip("\n") + " \n")  # git keeps the space
    assert gitcmd._config_identity(wt) is None
    (wt / ".git").write_text(pointer.rstrip("\n") + "\nsecond line\n")
    assert gitcmd._config_identity(wt) is None
    (wt / ".git").write_text(pointer)

    commondir = (admin / "commondir").read_text()
    (admin / "commondir").write_text(commondir.rstrip("\n") + "\r\n")  # git drops CR, LF
    assert gitcmd._config_identity(wt) == clean
    (admin / "commondir").write_text(commondir.rstrip("\n") + "\t\n")  # git keeps the tab
    assert gitcmd._config_identity(wt) is None
    (admin / "commondir").write_text("\n")
    assert gitcmd._config_identity(wt) is None
    (admin / "commondir").write_text(commondir)

    (repo / ".git" / "config").rename(tmp_path / "config.away")  # no common config
    assert gitcmd._config_identity(wt) is None
    assert gitcmd._config_identity(repo) is None
