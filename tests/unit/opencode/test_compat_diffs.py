"""The compat model's diffs apply with ``git apply --check`` to the tree as it is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shared.domain.contracts import BUILD_OUTPUT_SCHEMA, validate_answer
from standins.oc_compat import answers, repo
from standins.oc_compat.directives import parse


def git(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        input=stdin,
        text=True,
        capture_output=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A git repo with the awkward cases: no final newline, empty file, nested file."""
    (tmp_path / "README.md").write_text("# Demo\nno newline at the end")
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "gone.cfg").write_text("[a]\nb = 1\n")
    assert git(tmp_path, "init", "-q").returncode == 0
    git(tmp_path, "add", "-A")
    assert git(tmp_path, "commit", "-qm", "init").returncode == 0
    return tmp_path


def patch_prompt(*files: tuple[str, str]) -> str:
    plan = {
        "design": "d",
        "files": [{"path": p, "change": c, "why": "w"} for p, c in files],
        "risks": [],
        "tests": [],
    }
    return f"Apply the plan.\n{answers.PLAN_BEGIN}\n{json.dumps(plan)}\n{answers.PLAN_END}\n"


def applies(tree: Path, diff: str) -> bool:
    result = git(tree, "apply", "--check", "-", stdin=diff)
    assert result.returncode == 0, result.stderr
    return True


def test_a_patch_for_every_kind_of_change_applies_cleanly(tree: Path) -> None:
    prompt = patch_prompt(
        ("README.md", "modify"),
        ("calc.py", "modify"),
        ("empty.txt", "modify"),
        ("pkg/gone.cfg", "delete"),
        ("src/new_module.py", "add"),
    )
    patch = answers.scripted_patch(0, tree, prompt)
    assert applies(tree, patch["diff"])
    for path in ("README.md", "calc.py", "empty.txt", "pkg/gone.cfg", "src/new_module.py"):
        assert f"diff --git a/{path} b/{path}" in patch["diff"]
    assert git(tree, "apply", "-", stdin=patch["diff"]).returncode == 0
    assert not (tree / "pkg" / "gone.cfg").exists()
    compile((tree / "calc.py").read_text(), "calc.py", "exec")
    compile((tree / "src" / "new_module.py").read_text(), "new_module.py", "exec")


def test_the_patch_follows_the_working_tree_not_head(tree: Path) -> None:
    (tree / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    patch = answers.scripted_patch(0, tree, patch_prompt(("calc.py", "modify")))
    assert applies(tree, patch["diff"])


def test_the_same_seed_and_tree_give_the_same_patch_and_another_seed_does_not(tree: Path) -> None:
    prompt = patch_prompt(("calc.py", "modify"))
    first = answers.scripted_patch(7, tree, prompt)
    assert answers.scripted_patch(7, tree, prompt) == first
    assert answers.scripted_patch(8, tree, prompt) != first


def test_paths_outside_the_repository_are_never_patched(tree: Path) -> None:
    prompt = patch_prompt(
        ("../escape.txt", "add"), ("/etc/passwd", "modify"), (".git/config", "modify")
    )
    patch = answers.scripted_patch(0, tree, prompt)
    assert "escape" not in patch["diff"]
    assert "passwd" not in patch["diff"]
    assert ".git/config" not in patch["diff"]
    assert patch["diff"] == "", "nothing outside the plan is patched in their place either"


def test_the_patch_makes_exactly_the_planned_kinds_of_change(tree: Path) -> None:
    entries = [
        {"path": "calc.py", "change": "modify"},
        {"path": "empty.txt", "change": "delete"},
        {"path": "docs/guide.md", "change": "add"},
        {"path": "pkg/kept.cfg", "change": "rename", "from": "pkg/gone.cfg"},
    ]
    plan = {"design": "d", "files": [{**e, "why": "w"} for e in entries], "risks": [], "tests": []}
    prompt = f"{answers.PLAN_BEGIN}\n{json.dumps(plan)}\n{answers.PLAN_END}\n"
    patch = answers.scripted_patch(0, tree, prompt)
    assert git(tree, "apply", "--index", "-", stdin=patch["diff"]).returncode == 0
    status = git(tree, "diff", "--cached", "-M", "--name-status", "HEAD").stdout.splitlines()
    assert sorted(status) == sorted(
        ["M\tcalc.py", "D\tempty.txt", "A\tdocs/guide.md", "R100\tpkg/gone.cfg\tpkg/kept.cfg"]
    )


def test_a_change_the_tree_does_not_allow_is_left_out_never_replaced_by_another(
    tree: Path,
) -> None:
    missing = answers.scripted_patch(0, tree, patch_prompt(("nope.py", "modify")))
    existing = answers.scripted_patch(0, tree, patch_prompt(("calc.py", "add")))
    assert (missing["diff"], existing["diff"]) == ("", "")


def test_without_a_plan_block_the_patch_adds_notes_when_there_is_no_readme(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    patch = answers.scripted_patch(0, tmp_path, "just do something")
    assert f"+++ b/{repo.NOTES_FILE}" in patch["diff"]
    assert applies(tmp_path, patch["diff"])


def test_a_plan_names_the_files_the_prompt_mentions(tree: Path) -> None:
    plan = answers.plan_output(0, tree, "Make calc.py subtract too; see ./README.md and nope.py")
    assert [f["path"] for f in plan["files"]] == ["calc.py", "README.md"]
    assert {f["change"] for f in plan["files"]} == {"modify"}


def test_a_plan_falls_back_to_the_readme_then_to_a_notes_file(tree: Path, tmp_path: Path) -> None:
    assert answers.plan_output(0, tree, "tidy up")["files"][0]["path"] == "README.md"
    bare = tmp_path / "bare"
    bare.mkdir()
    files = answers.plan_output(0, bare, "tidy up")["files"]
    assert files == [{"path": repo.NOTES_FILE, "change": "add", "why": "No README to extend."}]


def test_decide_runs_unittest_when_the_tree_has_tests_and_shows_the_diff_otherwise(
    tree: Path,
) -> None:
    build = validate_answer(BUILD_OUTPUT_SCHEMA, answers.build_output(tree, parse("")))
    assert build["argv"] == answers.FALLBACK_ARGV
    (tree / "test_calc.py").write_text("import unittest\n")
    assert answers.build_output(tree, parse(""))["argv"] == answers.UNITTEST_ARGV
    assert answers.build_output(tree, parse("[oc:fail-verify]"))["argv"] == answers.FAIL_ARGV
