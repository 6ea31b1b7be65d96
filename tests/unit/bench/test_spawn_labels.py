"""The bench names each process kodo starts by what it runs (bench.spawns.label):
git by its subcommand, a sandbox by the program inside it."""

from __future__ import annotations

import subprocess
import sys

from bench import spawns
from services.worker import git_ops


def test_git_is_named_by_its_subcommand_past_its_global_options() -> None:
    argv = ["git", "-c", "core.hooksPath=/dev/null", "-C", "/w", "--bare", "diff", "--stat"]
    assert spawns.label(argv) == "git diff"
    assert spawns.label(["/usr/bin/git", "--git-dir=/r/.git", "read-tree", "-u"]) == "git read-tree"
    assert spawns.label(["git", "--version"]) == "git"


def test_a_pinned_git_is_named_by_the_git_its_sandbox_runs() -> None:
    """The very options kodo's pinned git starts with (confinement and system root)."""
    argv = [
        "bwrap",
        *git_ops._confinement(),
        *git_ops._system_root(),
        "--dev", "/dev",
        "--size", "65536", "--tmpfs", "/r/.git/worktrees",
        "--bind-fd", "7", "/w.pin",
        "--chdir", "/w.pin",
        "--die-with-parent",
        "/usr/bin/git", "-c", "a.b=c", "add", "--all",
    ]  # fmt: skip
    assert spawns.label(argv) == "bwrap git add"


def test_a_sandbox_after_a_double_dash_and_other_programs_by_name() -> None:
    assert spawns.label(["bwrap", "--unshare-pid", "--", "/bin/sh", "-c", "x"]) == "bwrap sh"
    assert spawns.label(["/usr/bin/nsenter", "--user", "--", "tee"]) == "nsenter"
    assert spawns.label([]) == "?"


def test_a_sandbox_whose_options_cannot_be_read_says_so() -> None:
    assert spawns.label(["bwrap", "--some-new-option", "x", "/usr/bin/git", "status"]) == "bwrap ?"
    assert spawns.label(["bwrap", "--ro-bind", "/usr"]) == "bwrap ?"


def test_installed_it_counts_each_start_once_by_label() -> None:
    seen: list[str] = []
    spawns.install(seen.append)
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        subprocess.run(["git", "--version"], check=True, capture_output=True)
    finally:
        spawns.uninstall()
    subprocess.run(["git", "--version"], check=True, capture_output=True)

    assert seen == [f"spawn:{sys.executable.rsplit('/', 1)[-1]}", "spawn:git"]
