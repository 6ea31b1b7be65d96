"""Run-time policy gates, specified on plans and diffs without IO."""

from __future__ import annotations

import pytest

from shared.domain.policy import (
    Policy,
    PolicyError,
    check_patch,
    check_plan,
    diff_stats,
    effective_allowlist,
    policy_from_mapping,
)

DIFF = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1 +1,2 @@\n-x\n+y\n+z\n"
    "diff --git a/.github/workflows/ci.yml b/.github/workflows/ci.yml\n"
    "--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n@@ -1 +1 @@\n-a\n+b\n"
)


def _plan(*paths: str) -> dict[str, object]:
    return {"files": [{"path": p, "change": "modify", "why": ""} for p in paths]}


def test_the_default_policy_forbids_workflows_env_files_and_kodo_itself() -> None:
    found = check_plan(
        Policy(), _plan("calc.py", ".github/workflows/ci.yml", "app/.env", ".kodo/policy.toml")
    )
    assert [v.detail.split(" ")[0] for v in found] == [
        ".github/workflows/ci.yml",
        "app/.env",
        ".kodo/policy.toml",
    ]
    assert {v.rule for v in found} == {"forbidden_path"}


def test_a_plan_with_too_many_files_is_refused() -> None:
    found = check_plan(Policy(max_files=1), _plan("a.py", "b.py"))
    assert [v.rule for v in found] == ["max_files"]


def test_diff_stats_count_paths_and_changed_lines_not_headers() -> None:
    stats = diff_stats(DIFF)
    assert stats.paths == ("calc.py", ".github/workflows/ci.yml")
    assert (stats.added, stats.removed, stats.lines) == (3, 2, 5)


def test_a_patch_is_checked_for_paths_files_and_lines() -> None:
    rules = [v.rule for v in check_patch(Policy(max_files=1, max_lines=4), diff_stats(DIFF))]
    assert rules == ["forbidden_path", "max_files", "max_lines"]
    assert check_patch(Policy(forbidden_paths=()), diff_stats(DIFF)) == []


def test_a_repository_may_narrow_the_operators_allowlist_but_never_widen_it() -> None:
    operator = ("python3", "git")
    assert effective_allowlist(Policy(), operator) == operator
    assert effective_allowlist(Policy(exec_allowlist=("git", "bash")), operator) == ("git",)


def test_a_policy_file_is_parsed_strictly() -> None:
    policy = policy_from_mapping(
        {"extra_forbidden_paths": ["secrets/*"], "max_lines": 10, "exec_allowlist": ["make"]}, "t"
    )
    assert "secrets/*" in policy.forbidden_paths
    assert ".env" in policy.forbidden_paths
    assert (policy.max_lines, policy.exec_allowlist) == (10, ("make",))
    assert Policy.from_json(policy.to_json()) == policy
    for bad in ({"max_lines": 0}, {"max_files": "3"}, {"forbidden_paths": "x"}, {"typo": 1}):
        with pytest.raises(PolicyError):
            policy_from_mapping(bad, "t")
