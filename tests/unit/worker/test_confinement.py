"""Patches stay inside the worktree; verification commands stay on the allowlist."""

from __future__ import annotations

import pytest

from services.worker.git_ops import UnsafePatch, check_confined, patch_paths
from services.worker.steps.execute import program_allowed, scrubbed_env


def _diff(old: str, new: str) -> str:
    return f"diff --git a/{old} b/{new}\n--- a/{old}\n+++ b/{new}\n@@ -1 +1 @@\n-x\n+y\n"


def test_every_path_a_diff_touches_is_listed_once() -> None:
    created = "diff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n"
    assert patch_paths(_diff("calc.py", "calc.py") + created) == ["calc.py", "n.txt"]


@pytest.mark.parametrize(
    "path", ["../outside.py", "/etc/passwd", ".git/hooks/pre-commit", "src/../../x", "a\\b"]
)
def test_a_path_that_could_leave_the_worktree_is_refused(path: str) -> None:
    with pytest.raises(UnsafePatch):
        check_confined(_diff(path, path))


def test_a_patch_without_paths_is_refused() -> None:
    with pytest.raises(UnsafePatch, match="no file"):
        check_confined("just prose, no diff")


def test_an_ordinary_nested_path_is_accepted() -> None:
    assert check_confined(_diff("src/pkg/mod.py", "src/pkg/mod.py")) == ["src/pkg/mod.py"]


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
    assert env == {"PATH": "/bin", "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}


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
