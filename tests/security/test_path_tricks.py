"""Path tricks in the agent's edits each fail closed, and nothing they aim at lands on the
run's branch: trailing spaces and dots, renames onto the policy file, paths past
PATH_MAX, and a `.GIT` folder (a red-team pass found these blocked; kept as a spec)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Campaign, Hostile, Outcome, assert_fails_closed, campaign

pytestmark = pytest.mark.security
README = FILES["README.md"]
LONG = "/".join(["d" * 200] * 21) + "/x.txt"  # > PATH_MAX


def _attack(name: str, plan: dict[str, object], diff: str) -> Callable[[Hostile], Outcome]:
    def run(stack: Hostile) -> Outcome:
        return stack.drive(
            stack.repo(name), stack.fixture(name, plan=plan, patch=attacks.patch(diff))
        )

    return run


def _rename(old: str, new: str) -> str:
    return (
        f"diff --git a/{old} b/{new}\nsimilarity index 100%\nrename from {old}\nrename to {new}\n"
    )


def _quoted_add(quoted: str) -> str:
    """A new file whose name git quotes (octal escapes for its bytes), as git writes one."""
    return (
        f'diff --git "a/{quoted}" "b/{quoted}"\nnew file mode 100644\n'
        f'--- /dev/null\n+++ "b/{quoted}"\n@@ -0,0 +1 @@\n+hello\n'
    )


ATTACKS: dict[str, Callable[[Hostile], Outcome]] = {
    "trailing-space": _attack(
        "trailing-space",
        attacks.plan(("README.md", "modify")),
        attacks.add_file("README.md ", "shadow\n"),
    ),
    "trailing-dot": _attack(
        "trailing-dot",
        attacks.plan(("README.md", "modify")),
        attacks.add_file("README.md.", "shadow\n"),
    ),
    "rename-onto-policy": _attack(
        "rename-onto-policy",
        attacks.plan(("README.md", "modify")),
        _rename("README.md", ".kodo/policy.toml"),
    ),
    "planned-rename-onto-policy": _attack(
        "planned-rename-onto-policy",
        attacks.plan(("README.md", "delete"), (".kodo/policy.toml", "add")),
        _rename("README.md", ".kodo/policy.toml"),
    ),
    "very-long-path": _attack(
        "very-long-path", attacks.plan((LONG, "add")), attacks.add_file(LONG, "x\n")
    ),
    "non-utf8-name": _attack(
        "non-utf8-name",
        attacks.plan(("x.txt", "add")),
        _quoted_add("\\377.txt"),
    ),
    "two-names-reading-as-the-planned-one": _attack(
        "two-names-reading-as-the-planned-one",
        attacks.plan(("\ufffd.txt", "add")),
        _quoted_add("\\357\\277\\275.txt") + _quoted_add("\\377.txt"),
    ),
    "dot-git-case": _attack(
        "dot-git-case",
        attacks.plan(("README.md", "modify")),
        attacks.add_file(".GIT/config", "[core]\n\tfsmonitor = touch /tmp/x\n"),
    ),
}


@pytest.fixture(scope="module")
def launched(hostile: Hostile) -> Iterator[Campaign]:
    with campaign(hostile, ATTACKS) as started:
        yield started


@pytest.mark.parametrize("name", list(ATTACKS))
def test_path_tricks_fail_closed(hostile: Hostile, launched: Campaign, name: str) -> None:
    outcome = launched.outcome(name)
    files = hostile.branch_files(hostile.repos / name, outcome.run_id)
    if name in ("very-long-path", "dot-git-case"):  # refused earlier: schema / git apply
        assert outcome.status == "failed", outcome.describe()
    elif name in ("non-utf8-name", "two-names-reading-as-the-planned-one"):
        # before: refused only by the disk check, as worktree_filter (the name git gave,
        # read with U+FFFD, named no file), and the plan check took both names for one
        assert_fails_closed(outcome, "path_encoding")
        assert set(files) <= set(FILES), files  # nothing of the agent's was committed
    else:
        assert_fails_closed(
            outcome, "outside_plan", "forbidden_path", "confinement", "max_files", "max_lines"
        )
    assert not any(p.startswith((".kodo", ".GIT")) or p.endswith((" ", ".")) for p in files)


def test_a_base_commit_with_links_out_of_the_worktree_runs_no_agent_turn(
    hostile: Hostile,
) -> None:
    """The repository itself carries the way out: ``w -> ..`` (every run's worktree, the
    workspaces folder the daemon may write) and ``r -> /``. Before, the plan and build
    turns ran with both live in the daemon's working folder (1.18.33 writes through a
    link; a grep with --follow reads through one) and the run succeeded. Now the run
    fails closed with rule ``symlink`` before the first prompt (found by a red-team pass).
    """
    repo = hostile.repo("symlinked", [{"w": "@symlink:..", "r": "@symlink:/"}])
    fixture = hostile.fixture(
        "symlinked",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", FILES["README.md"], ["", "More."])),
        build=attacks.build("python3", "-c", "print('ok')"),
    )

    outcome = hostile.drive(repo, fixture)

    assert_fails_closed(outcome, "symlink")
    assert "r -> /" in str(outcome.diagnostic())
    assert "w -> .." in str(outcome.diagnostic())
    with hostile.engine.connect() as conn:
        calls = conn.execute(
            text("SELECT count(*) FROM app.opencode_calls WHERE run_id = :r"),
            {"r": outcome.run_id},
        ).scalar_one()
    assert calls == 0, "no prompt was sent for a checkout with a way out"


def test_a_new_link_that_opens_a_base_link_out_of_the_worktree_is_refused(
    hostile: Hostile,
) -> None:
    """The base holds ``a -> b/..`` with no ``b``: it resolves inside (the worktree
    itself), so CompileST lets it be. With ``allow_symlinks``, the patch adds ``b -> .``,
    a link inside: now ``a`` is the workspaces folder, every other run's worktree (a
    red-team pass). A change adding a link re-judges every link of the staged tree."""
    repo = hostile.repo(
        "reopened",
        [{".kodo/policy.toml": "[policy]\nallow_symlinks = true\n", "a": "@symlink:b/.."}],
    )
    link = "diff --git a/b b/b\nnew file mode 120000\n--- /dev/null\n+++ b/b\n@@ -0,0 +1 @@\n+.\n"
    fixture = hostile.fixture(
        "reopened",
        plan=attacks.plan(("b", "add")),
        patch=attacks.patch(link + "\\ No newline at end of file\n"),
        build=attacks.build("python3", "-c", "print('ok')"),
    )

    outcome = hostile.drive(repo, fixture)

    assert_fails_closed(outcome, "symlink")
    assert "a -> b/.." in str(outcome.diagnostic()), outcome.describe()


_NFC_CAFE = "caf\u00e9.py"
_NFD_CAFE = "cafe\u0301.py"  # drawn exactly as the tracked one, on the plan card too


@pytest.mark.parametrize(
    ("twin", "tracked"),
    [("Calc.py", None), (_NFD_CAFE, _NFC_CAFE), ("Docs/notes.md", "docs/guide.md")],
    ids=["case-twin", "decomposed-twin", "folder-twin"],
)
def test_a_plan_naming_a_tracked_name_on_macos_or_windows_is_never_shown_for_approval(
    hostile: Hostile, twin: str, tracked: str | None
) -> None:
    """The plan names only a new file; its name is a tracked file's (or folder's) on a
    case-folding, normalizing file system. Compared byte for byte, it passed every rule:
    the run succeeded and its branch held both, and a developer checking it out on macOS
    or Windows got the new file's bytes in the tracked one, which nobody approved and no
    verification ran (red-team helper-95). Refused when the patch landed, the plan was
    still shown first, its twin drawn like the tracked name on the approver's screen:
    it is judged against the base tree before that, and no approval is asked."""
    name = f"twin-{len(twin)}-{twin.encode().hex()[:12]}"
    fixture = hostile.fixture(
        name,
        plan=attacks.plan((twin, "add")),
        patch=attacks.patch(attacks.add_file(twin, "def add(a, b):\n    return a - b\n")),
        build=attacks.build("python3", "-c", "print(1)"),
    )
    commits = [{tracked: "def add(a, b):\n    return a + b\n"}] if tracked else None
    outcome = hostile.drive(hostile.repo(name, commits), fixture, approve=False)
    assert_fails_closed(outcome, "path_collision")
    assert "on a case-insensitive or normalizing file system" in (outcome.run.get("error") or "")
    assert outcome.plan is None, f"a plan was shown for approval\n{outcome.describe()}"
    assert {s["stepId"] for s in outcome.run["steps"]} == {"CompileST"}, outcome.describe()


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (("README.MD", "modify"), "README.MD is not a file of the base tree"),
        (("calc.py", "add"), "calc.py is a file of the base tree already"),
    ],
    ids=["modify-a-case-twin", "add-a-tracked-name"],
)
def test_a_plan_the_base_tree_does_not_bear_out_is_never_shown_for_approval(
    hostile: Hostile, entry: tuple[str, str], said: str
) -> None:
    """``modify README.MD`` beside a tracked ``README.md`` reads as a change to that file
    on the approver's screen, and the patch that follows it (the tracked file edited)
    would be refused only after approval and a paid call. A plan whose entries disagree
    with the base tree is asked for again, saying why, and never shown; a model that
    insists fails the run under rule ``plan_base`` with nothing applied."""
    name = f"plan-base-{entry[1]}"
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(entry),
        patch=attacks.patch(attacks.add_file("never.py", "x = 1\n")),
        build=attacks.build("python3", "-c", "print(1)"),
    )
    outcome = hostile.drive(hostile.repo(name), fixture, approve=False)
    assert_fails_closed(outcome, "plan_base")
    assert said in (outcome.run.get("error") or ""), outcome.describe()
    assert outcome.plan is None, f"a plan was shown for approval\n{outcome.describe()}"
    assert {s["stepId"] for s in outcome.run["steps"]} == {"CompileST"}, outcome.describe()
    attempts = outcome.diagnostic()["attempts"]  # asked again, within the attempts
    assert len(attempts) > 1
    assert {a["status"] for a in attempts} == {"rejected"}
