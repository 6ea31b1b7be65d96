"""The one way kodo runs git: hardened so a repository can never make git run its code.

A repository (or a command that once ran in it) controls ``.git/config``, ``.git/hooks``
and ``.gitattributes``; each can name a program for git to run (a hook, an fsmonitor, a
filter/diff/merge driver, a pager, an editor, an ssh command). Every call here:

* reads no system or global config (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL``);
* points ``core.hooksPath`` nowhere and turns fsmonitor off;
* blanks every command-valued key the repository's config sets (listed with
  ``git config --list`` first), so no filter/diff/merge driver can start;
* passes ``--no-ext-diff --no-textconv`` to the commands that diff;
* passes ``--ignore-submodules=dirty`` to the commands that diff and to ``status``: a
  nested repository's commit is still compared (a gitlink a ``.gitmodules`` marks
  ``ignore = all`` is never hidden from what kodo judges), but git never looks inside its
  work tree, which would start a ``git status`` there under that repository's own config
  (its filter drivers are not among the keys blanked here);
* allows no protocol but ``file``, never prompts, never pages, never opens an editor.

Overrides travel as ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n`` (command-line scope, the
highest precedence), so a key with ``=`` or spaces in its subsection stays one key.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HARDENED: dict[str, str] = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.useBuiltinFSMonitor": "false",
    "core.untrackedCache": "false",
    "core.pager": "cat",
    "core.editor": "false",
    "sequence.editor": "false",
    "core.askPass": "",
    "core.sshCommand": "false",
    "core.gitProxy": "",
    "core.alternateRefsCommand": "",
    "credential.helper": "",
    "diff.external": "",
    "gpg.program": "false",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "protocol.allow": "never",
    "protocol.file.allow": "always",
    "gc.auto": "0",
    "maintenance.auto": "false",
}
"""Set on every call, whatever the repository's config says."""

_COMMAND_KEYS = re.compile(
    r"""^(?:
        filter\..+\.(?:clean|smudge|process)
      | diff\..+\.(?:command|textconv)
      | merge\..+\.driver
      | (?:difftool|mergetool)\..+\.(?:cmd|path)
      | gpg\..+\.program
      | remote\..+\.(?:uploadpack|receivepack|vcs)
      | pager\..+
      | alias\..+
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
"""Repository config keys whose value git may run as a program: each is blanked."""

_DIFFING = frozenset(
    {"diff", "log", "show", "diff-tree", "diff-index", "diff-files", "format-patch"}
)
SUBMODULES = "--ignore-submodules=dirty"
"""Compare a nested repository's commit, never look into its work tree (see above)."""

ENV: dict[str, str] = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "GIT_EDITOR": "false",
    "GIT_ASKPASS": "false",
    "SSH_ASKPASS": "false",
    "GIT_OPTIONAL_LOCKS": "0",
    "LC_ALL": "C",
}
"""The environment of every git call (plus PATH); nothing else of the caller's leaks in."""


class GitTimeout(RuntimeError):
    """git took longer than its timeout (it was killed)."""


def command_keys(config_names: Sequence[str]) -> list[str]:
    """The keys of ``git config --list --name-only`` that name a program to run."""
    return [name for name in config_names if _COMMAND_KEYS.match(name)]


def config_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """``overrides`` as git's command-scope config environment."""
    env = {"GIT_CONFIG_COUNT": str(len(overrides))}
    for i, (key, value) in enumerate(overrides.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def hardened_args(args: Sequence[str]) -> list[str]:
    """``args`` with ``--no-ext-diff --no-textconv`` after a diffing subcommand, and
    :data:`SUBMODULES` after it and after ``status`` (the command line wins over any
    ``diff.ignoreSubmodules`` or ``submodule.<name>.ignore``)."""
    if args and args[0] in _DIFFING:
        return [args[0], "--no-ext-diff", "--no-textconv", SUBMODULES, *args[1:]]
    if args and args[0] == "status":
        return [args[0], SUBMODULES, *args[1:]]
    return list(args)


def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **ENV}


def _listed_names(cwd: Path, timeout_s: float) -> list[str]:
    env = {**base_env(), **config_env(HARDENED)}
    proc = subprocess.run(
        ["git", "config", "--list", "--name-only", "-z"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        return []  # outside a repository there is no repository config to neutralise
    return [n for n in proc.stdout.decode(errors="surrogateescape").split("\0") if n]


def overrides_for(cwd: Path, extra: Mapping[str, str], timeout_s: float) -> dict[str, str]:
    """Every override for a call in ``cwd``: blanked command keys, then the fixed ones."""
    blanked = {key: "" for key in command_keys(_listed_names(cwd, timeout_s))}
    for key in list(blanked):
        if key.lower().startswith("filter."):  # a required filter with no command fails
            blanked[key.rsplit(".", 1)[0] + ".required"] = "false"
    return {**blanked, **HARDENED, **extra}


def run_git(
    cwd: Path,
    args: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout_s: float = 60,
    config: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>`` in ``cwd``, hardened; never raises on git's own failure."""
    env = {**base_env(), **config_env(overrides_for(cwd, config or {}, timeout_s))}
    # ``input`` or ``stdin``, never both named: gevent's subprocess.run (a patched
    # process, e.g. oc-compat) refuses a ``stdin`` keyword beside ``input`` even if None
    feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        return subprocess.run(
            ["git", *hardened_args(args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            **feed,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitTimeout(f"git {' '.join(args)} took longer than {timeout_s}s") from exc
