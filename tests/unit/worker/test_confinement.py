"""Verification commands stay on the allowlist, with a scrubbed environment.

(Patch confinement is judged on what git says a patch changed:
tests/unit/domain/test_change_check.py and tests/integration/worker/test_policy_gates.py.)
"""

from __future__ import annotations

import pytest

from services.worker.sandbox.layout import PYCACHE_PREFIX
from services.worker.steps.execute import scrubbed_env
from shared.domain.exec_rules import argv_violation, program_allowed


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["python3", "-m", "unittest"], True),
        (["bash", "-c", "rm -rf /"], False),
        (["/usr/bin/python3"], False),
        (["./python3"], False),
        ([], False),
    ],
)
def test_only_bare_allowlisted_programs_may_run(argv: list[str], allowed: bool) -> None:
    assert (program_allowed(argv, ("python3", "git")) is None) is allowed


def test_the_command_environment_carries_no_secrets() -> None:
    env = scrubbed_env(
        {"PATH": "/bin", "HOME": "/root", "OPENAI_API_KEY": "sk-x", "OC_PASSWORD": "p"}
    )
    assert env == {
        "PATH": "/bin",
        "HOME": "/nonexistent",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",  # prints come before the runner's summary
        "MAKEFLAGS": "B",  # make remakes what it is asked for
        "PYTHONPYCACHEPREFIX": PYCACHE_PREFIX,  # a checkout's __pycache__ is never read
    }


def test_bytecode_is_hidden_unless_the_tree_was_weighed_and_carries_none() -> None:
    """The prefix hides the standard library's bytecode too (each command recompiles
    what it imports of it): it is left out only where the tree has no ``__pycache__``."""
    assert "PYTHONPYCACHEPREFIX" not in scrubbed_env({}, hide_bytecode=False)
    assert scrubbed_env({})["PYTHONPYCACHEPREFIX"] == PYCACHE_PREFIX


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["git", "--no-pager", "log", "-C", "3"], True),  # -C after the subcommand is its own
        (["git", "status"], True),
        (["git", "-c", "core.pager=sh", "log"], False),
        (["git", "--config-env=core.pager=X", "log"], False),
        (["git", "--exec-path=/tmp", "status"], False),
        (["git", "-C", "/", "status"], False),
        (["git", "--git-dir=/x", "status"], False),
        (["git", "--work-tree=/", "status"], False),
        (["git", "my-alias"], False),
        (["git"], False),
    ],
)
def test_git_may_only_run_builtins_without_global_options(argv: list[str], allowed: bool) -> None:
    assert (program_allowed(argv, ("git",)) is None) is allowed


@pytest.mark.parametrize(
    "argv",
    [["python3", "-c", "print(1)\x00"], ["git", "log", "--grep=\x00"], ["python3", "\x00"]],
    ids=["in-an-argument", "after-a-git-subcommand", "a-bare-nul"],
)
def test_an_argument_holding_a_nul_byte_breaks_exec_argv(argv: list[str]) -> None:
    """No program can receive a NUL (the kernel ends an argument there): it is refused
    under a rule rather than crashing the step that would start it."""
    found = argv_violation(argv, ("python3", "git"))
    assert found is not None
    assert found.rule == "exec_argv"
    assert "NUL" in found.detail
