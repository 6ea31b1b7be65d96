"""Run-time policy: parsing, the strictest combination, plan gates, diff counting. No IO."""

from __future__ import annotations

import pytest

from shared.domain.change_check import check_plan
from shared.domain.policy import (
    DEFAULT_FORBIDDEN,
    MAX_FILE_BYTES,
    MAX_PATCH_BYTES,
    Policy,
    PolicyError,
    diff_stats,
    effective_allowlist,
    policy_from_mapping,
    strictest,
    unconfined,
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
    assert [v.paths for v in found] == [
        (".github/workflows/ci.yml",),
        ("app/.env",),
        (".kodo/policy.toml",),
    ]
    assert {v.rule for v in found} == {"forbidden_path"}


def test_a_plan_renaming_a_file_into_a_forbidden_path_is_refused_on_either_side() -> None:
    into = {"files": [{"path": ".github/workflows/x.yml", "change": "rename", "from": "a.yml"}]}
    out_of = {"files": [{"path": "public.txt", "change": "rename", "from": ".env"}]}
    assert [v.paths for v in check_plan(Policy(), into)] == [(".github/workflows/x.yml",)]
    assert [v.paths for v in check_plan(Policy(), out_of)] == [(".env",)]


def test_a_plan_naming_a_path_outside_the_worktree_is_refused() -> None:
    found = check_plan(Policy(forbidden_paths=()), _plan("../x.py", "/etc/passwd", "a/.git/hooks"))
    assert [v.rule for v in found] == ["confinement"] * 3


def test_a_plan_with_too_many_files_is_refused() -> None:
    found = check_plan(Policy(max_files=1), _plan("a.py", "b.py"))
    assert [v.rule for v in found] == ["max_files"]


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("src/pkg/mod.py", False),
        ("README.md", False),
        ("../outside.py", True),
        ("/etc/passwd", True),
        (".git/hooks/pre-commit", True),
        ("sub/.GIT/config", True),
        ("src/../../x", True),
        ("a\\b", True),
        ("a//b", True),
        ("./a", True),
        ("", True),
        ("notes\r.md", True),
        ("evil\u202egnp.exe", True),
        ("zero\u200bwidth.py", True),
        ("bell\x07.md", True),
        ("caf\u00e9/na\u00efve.py", False),
    ],
)
def test_a_path_that_could_leave_the_worktree_is_unconfined(path: str, refused: bool) -> None:
    assert (unconfined(path) is not None) is refused


def test_diff_stats_count_changed_lines_not_headers_for_display() -> None:
    stats = diff_stats(DIFF)
    assert (stats.added, stats.removed, stats.lines) == (3, 2, 5)


def test_diff_stats_count_hunk_lines_that_look_like_file_headers() -> None:
    """A removed SQL comment (``-- x``) reads ``--- x``; an added ``++i`` reads ``+++i``:
    inside a hunk they are changed lines, not headers. No newline markers, binary and
    rename-only sections, and ``/dev/null`` sides count nothing of their own."""
    diff = (
        'diff --git "a/my file.sql" "b/my file.sql"\n--- "a/my file.sql"\n+++ "b/my file.sql"\n'
        "@@ -1,3 +1,3 @@\n--- old\u2028comment\n+++i;\n keep\n--- gone\n+-- new comment\n"
        "\\ No newline at end of file\n"
        "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n"
        "@@ -0,0 +1 @@\n+hello\n"
        "diff --git a/a.bin b/a.bin\nGIT binary patch\nliteral 2\nJcmZ?d00001\n\n"
        "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to y\n"
    )
    stats = diff_stats(diff)
    assert (stats.added, stats.removed) == (3, 2)


def test_a_repository_may_narrow_the_operators_allowlist_but_never_widen_it() -> None:
    operator = ("python3", "git")
    assert effective_allowlist(Policy(), operator) == operator
    assert effective_allowlist(Policy(exec_allowlist=("git", "bash")), operator) == ("git",)


def test_a_policy_file_is_parsed_strictly() -> None:
    policy = policy_from_mapping(
        {
            "extra_forbidden_paths": ["secrets/*"],
            "max_lines": 10,
            "max_patch_bytes": 65536,
            "max_file_bytes": 1024,
            "exec_allowlist": ["make"],
            "allow_symlinks": True,
            "allow_new_executables": False,
            "require_verification": False,
        },
        "t",
    )
    assert policy.require_verification is False
    assert "secrets/*" in policy.forbidden_paths
    assert ".env" in policy.forbidden_paths
    assert (policy.max_lines, policy.exec_allowlist) == (10, ("make",))
    assert (policy.max_patch_bytes, policy.max_file_bytes) == (65536, 1024)
    assert (policy.allow_symlinks, policy.allow_new_executables) == (True, False)
    assert Policy.from_json(policy.to_json()) == policy
    bad_ones: list[dict[str, object]] = [
        {"max_lines": 0},
        {"max_files": "3"},
        {"max_patch_bytes": 0},
        {"max_file_bytes": -1},
        {"max_patch_bytes": True},
        {"forbidden_paths": "x"},
        {"typo": 1},
        {"allow_symlinks": "yes"},
        {"require_verification": "no"},
    ]
    for bad in bad_ones:
        with pytest.raises(PolicyError):
            policy_from_mapping(bad, "t")


def test_symlinks_are_refused_unless_a_policy_allows_them() -> None:
    assert Policy().allow_symlinks is False
    assert Policy().allow_new_executables is True


def test_a_stored_policy_from_before_the_new_knobs_reads_back_with_safe_defaults() -> None:
    old = {"forbidden_paths": ["x"], "max_files": 3, "max_lines": 4, "exec_allowlist": None}
    policy = Policy.from_json(old)
    assert (policy.allow_symlinks, policy.allow_new_executables) == (False, True)
    assert (policy.max_patch_bytes, policy.max_file_bytes) == (MAX_PATCH_BYTES, MAX_FILE_BYTES)


def test_the_strictest_combination_unites_forbidden_paths_and_takes_the_smallest_limits() -> None:
    trusted = Policy(
        forbidden_paths=("a/*",), max_files=5, max_lines=900, max_patch_bytes=10, source="main"
    )
    weak = Policy(
        forbidden_paths=("b/*",), max_files=50, max_lines=100, max_file_bytes=7, source="HEAD~2"
    )
    both = strictest(trusted, weak)
    assert both.forbidden_paths == ("a/*", "b/*")
    assert (both.max_files, both.max_lines, both.max_patch_bytes) == (5, 100, 10)
    assert both.max_file_bytes == 7
    assert both.source == "main + HEAD~2"
    assert strictest(weak, trusted).forbidden_paths == ("b/*", "a/*")


def test_the_strictest_combination_intersects_allowlists_where_both_narrow() -> None:
    def allow(*names: str) -> Policy:
        return Policy(exec_allowlist=names)

    assert strictest(allow("make", "python3"), allow("python3", "bash")).exec_allowlist == (
        "python3",
    )
    assert strictest(Policy(), allow("make")).exec_allowlist == ("make",)
    assert strictest(allow("make"), Policy()).exec_allowlist == ("make",)
    assert strictest(Policy(), Policy()).exec_allowlist is None
    assert strictest(allow("make"), allow("bash")).exec_allowlist == ()


def test_the_strictest_combination_grants_a_permission_only_if_both_do() -> None:
    yes = Policy(allow_symlinks=True, allow_new_executables=True)
    no = Policy(allow_symlinks=False, allow_new_executables=False)
    assert (strictest(yes, yes).allow_symlinks, strictest(yes, yes).allow_new_executables) == (
        True,
        True,
    )
    for a, b in ((yes, no), (no, yes), (no, no)):
        combined = strictest(a, b)
        assert (combined.allow_symlinks, combined.allow_new_executables) == (False, False)


def test_combining_two_default_policies_changes_nothing() -> None:
    assert strictest(Policy(), Policy()) == Policy()
    assert strictest(Policy(), Policy()).forbidden_paths == DEFAULT_FORBIDDEN


def test_verification_is_required_unless_both_refs_waive_it() -> None:
    waived = Policy(require_verification=False)
    assert Policy().require_verification, "by default every run is verified"
    assert not strictest(waived, waived).require_verification
    assert strictest(waived, Policy()).require_verification
    assert strictest(Policy(), waived).require_verification
    assert Policy.from_json(waived.to_json()) == waived
    assert Policy.from_json(
        {**Policy().to_json(), "require_verification": None}
    ).require_verification


PYTEST = ("pytest", "-q")
MAKE = ("make", "test")


def test_a_policy_may_pin_the_commands_that_verify_a_change() -> None:
    """DecideST chooses the verification after approval: unpinned, `python3 -c pass`
    made any change 'verified'. A pinned policy admits its commands only, whole."""
    pinned = policy_from_mapping({"verify_commands": [list(PYTEST), list(MAKE)]}, "repo")
    assert pinned.verify_commands == (PYTEST, MAKE)
    assert pinned.verification_refusal(["pytest", "-q"]) is None
    refused = pinned.verification_refusal(["python3", "-c", "pass"])
    assert refused is not None
    assert refused.rule == "verify_pinned"
    assert "pytest -q; make test" in refused.detail
    assert pinned.verification_refusal(["pytest", "-q", "-k", "nothing"]) is not None
    assert Policy().verification_refusal(["python3", "-c", "pass"]) is None, "unpinned"
    assert Policy.from_json(pinned.to_json()) == pinned
    assert "verify_commands" not in Policy().to_json(), "an unpinned snapshot is unchanged"


@pytest.mark.parametrize(
    "raw",
    [[], [[]], [["pytest", ""]], ["pytest -q"], [["pytest"]] * 21, "pytest"],
    ids=["no-command-is-pinned-none", "empty-argv", "empty-arg", "a-string", "too-many", "str"],
)
def test_pinned_commands_are_parsed_strictly(raw: object) -> None:
    if raw == []:  # a pinned empty list is valid: nothing may verify (fail closed)
        assert policy_from_mapping({"verify_commands": raw}, "repo").verify_commands == ()
        return
    with pytest.raises(PolicyError, match="verify_commands"):
        policy_from_mapping({"verify_commands": raw}, "repo")


def test_the_strictest_combination_intersects_pinned_commands() -> None:
    both = Policy(verify_commands=(PYTEST, MAKE))
    one = Policy(verify_commands=(MAKE,))
    assert strictest(both, one).verify_commands == (MAKE,)
    assert strictest(Policy(), one).verify_commands == (MAKE,)
    assert strictest(one, Policy()).verify_commands == (MAKE,)
    assert strictest(Policy(verify_commands=(PYTEST,)), one).verify_commands == ()
    assert strictest(Policy(), Policy()).verify_commands is None


def test_a_plan_naming_kodo_s_own_folder_is_refused_whatever_the_policy_forbids() -> None:
    only_secrets = policy_from_mapping({"forbidden_paths": ["secrets/*"]}, "t")
    found = check_plan(only_secrets, _plan(".kodo/policy.toml", ".KODO/Policy.toml", ".kodo"))
    assert [(v.rule, v.paths) for v in found] == [
        ("forbidden_path", (".kodo/policy.toml",)),
        ("forbidden_path", (".KODO/Policy.toml",)),
        ("forbidden_path", (".kodo",)),
    ]
    assert check_plan(only_secrets, _plan("src/.kodo.py", "docs/kodo/x.md")) == []
