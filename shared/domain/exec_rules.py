"""Which agent-chosen argv may run at all. Pure: no IO.

A verification command is argv without a shell; its program must be a bare name on the
run's effective allowlist (the operator's, narrowed by the repository policy). git, if
an operator allowlists it, may not take options that choose config, paths or programs
(``-c``, ``-C``, ``--exec-path``...) nor run an alias. DecideST and ExecuteST both ask.
"""

from __future__ import annotations

from shared.domain.policy import Violation

EXEC_ALLOWLIST = "exec_allowlist"
EXEC_ARGV = "exec_argv"

GIT_GLOBAL_OPTIONS = frozenset(
    {
        "--no-pager",
        "--no-replace-objects",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-optional-locks",
    }
)
"""The only options allowed before a git subcommand (never -c, -C, --exec-path, ...)."""
GIT_BUILTINS = frozenset(
    (
        "add",
        "am",
        "annotate",
        "apply",
        "archive",
        "bisect",
        "blame",
        "branch",
        "bundle",
        "cat-file",
        "check-attr",
        "check-ignore",
        "check-mailmap",
        "check-ref-format",
        "checkout",
        "checkout-index",
        "cherry",
        "cherry-pick",
        "clean",
        "clone",
        "column",
        "commit",
        "commit-graph",
        "commit-tree",
        "count-objects",
        "describe",
        "diff",
        "diff-files",
        "diff-index",
        "diff-tree",
        "fetch-pack",
        "fmt-merge-msg",
        "for-each-ref",
        "format-patch",
        "fsck",
        "gc",
        "grep",
        "hash-object",
        "help",
        "index-pack",
        "init",
        "interpret-trailers",
        "log",
        "ls-files",
        "ls-remote",
        "ls-tree",
        "mailinfo",
        "mailsplit",
        "merge",
        "merge-base",
        "merge-file",
        "merge-tree",
        "mktag",
        "mktree",
        "mv",
        "name-rev",
        "notes",
        "pack-objects",
        "pack-refs",
        "patch-id",
        "prune",
        "prune-packed",
        "range-diff",
        "read-tree",
        "rebase",
        "reflog",
        "remote",
        "repack",
        "replace",
        "rerere",
        "reset",
        "restore",
        "rev-list",
        "rev-parse",
        "revert",
        "rm",
        "shortlog",
        "show",
        "show-branch",
        "show-index",
        "show-ref",
        "sparse-checkout",
        "stash",
        "status",
        "stripspace",
        "switch",
        "symbolic-ref",
        "tag",
        "unpack-file",
        "unpack-objects",
        "update-index",
        "update-ref",
        "verify-commit",
        "verify-pack",
        "verify-tag",
        "version",
        "whatchanged",
        "worktree",
        "write-tree",
    )
)
"""Subcommands git itself implements; anything else would be an alias or a git-* program."""


def program_allowed(argv: list[str], allowlist: tuple[str, ...]) -> str | None:
    """None if argv may run, else why not (the rule's name first)."""
    found = argv_violation(argv, allowlist)
    return None if found is None else f"{found.rule}: {found.detail}"


def argv_violation(argv: list[str], allowlist: tuple[str, ...]) -> Violation | None:
    """The rule ``argv`` breaks (``exec_allowlist``, ``exec_argv``, ``git_options``,
    ``git_alias``), if any. An argument holding a NUL byte cannot reach any program (the
    kernel ends a string there, and Python refuses to start it): ``exec_argv``."""
    program = argv[0] if argv else ""
    if not program or "/" in program or "\\" in program:
        return Violation(EXEC_ALLOWLIST, f"program {program!r} must be a bare name")
    if program not in allowlist:
        return Violation(
            EXEC_ALLOWLIST, f"program {program!r} is not on the allowlist ({', '.join(allowlist)})"
        )
    held = [i for i, arg in enumerate(argv) if "\0" in arg]
    if held:
        return Violation(
            EXEC_ARGV, f"argument {held[0]} holds a NUL byte, which no program receives"
        )
    if program == "git":
        return git_violation(argv[1:])
    return None


def git_violation(args: list[str]) -> Violation | None:
    """Why a git argv may not run (config, paths or programs chosen by the agent)."""
    for arg in args:
        if arg.startswith("-"):
            if arg not in GIT_GLOBAL_OPTIONS:
                return Violation("git_options", f"git option {arg!r} is refused (no -c/-C/...)")
            continue
        if arg not in GIT_BUILTINS:
            return Violation("git_alias", f"git subcommand {arg!r} is not a builtin")
        return None
    return Violation("git_options", "git needs a subcommand")
