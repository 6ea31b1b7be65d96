"""A change's new names are refused where they are another name of the resulting tree
on a case-folding, normalizing file system (macOS, Windows), folders included."""

from __future__ import annotations

import pytest

from shared.domain.change_check import FoldedTwins, IndexChange

TREE = ["calc.py", "caf\u00e9.py", "src/app/main.py", "README.md"]


def _add(path: str) -> IndexChange:
    return IndexChange("A", path, "000000", "100644")


def _twins(changes: list[IndexChange], tree: list[str] = TREE) -> dict[str, str]:
    twins = FoldedTwins.of_changes(changes)
    for name in tree:
        twins.feed(name)
    return twins.found


@pytest.mark.parametrize(
    ("new", "twins"),
    [
        ("Calc.py", {"Calc.py": "calc.py"}),
        ("cafe\u0301.py", {"cafe\u0301.py": "caf\u00e9.py"}),  # decomposed: drawn alike
        ("CAF\u00c9.PY", {"CAF\u00c9.PY": "caf\u00e9.py"}),
        ("Src/util.py", {"Src": "src"}),  # a folder is a name too: the new one is named
        ("src/App/x.py", {"src/App": "src/app"}),
        ("readme.MD", {"readme.MD": "README.md"}),
    ],
)
def test_a_new_name_folding_onto_a_tracked_one_is_a_twin(new: str, twins: dict[str, str]) -> None:
    assert _twins([_add(new)]) == twins


def test_two_new_names_folding_onto_each_other_are_twins() -> None:
    assert _twins([_add("notes.md"), _add("Notes.md")]) == {"notes.md": "Notes.md"}


@pytest.mark.parametrize(
    "changes",
    [
        [_add("src/app/util.py"), _add("src/lib.py")],  # beside tracked names, spelled alike
        [IndexChange("R", "Calc.py", "100644", "100644", source="calc.py")],  # case-only rename
        [IndexChange("D", "calc.py", "100644", "000000"), _add("CALC.py")],
        [IndexChange("M", "calc.py", "100644", "100644")],
    ],
    ids=["new-in-tracked-folders", "case-rename", "delete-then-add", "modify"],
)
def test_names_that_stay_one_per_folded_form_are_no_twins(changes: list[IndexChange]) -> None:
    assert _twins(changes) == {}


def test_a_change_bringing_no_name_reads_no_tree() -> None:
    assert not FoldedTwins.of_changes(
        [IndexChange("M", "calc.py", "100644", "100644")]
    ).brings_names
    assert FoldedTwins.of_changes([_add("x.py")]).brings_names


def test_the_refusal_names_both_spellings_in_ascii() -> None:
    twins = FoldedTwins.of_changes([_add("cafe\u0301.py")])
    twins.feed("caf\u00e9.py")
    violation = twins.violation()
    assert violation is not None
    assert violation.rule == "path_collision"
    assert violation.paths == ("cafe\u0301.py",)
    assert violation.detail.startswith("cafe\\u0301.py is caf\\xe9.py on a case-insensitive")


def _plan(*files: dict[str, str]) -> dict[str, object]:
    return {"summary": "s", "files": list(files)}


def _plan_twins(plan: dict[str, object], tree: list[str] = TREE) -> dict[str, str]:
    twins = FoldedTwins.of_plan(plan)
    for name in tree:
        twins.feed(name)
    return twins.found


@pytest.mark.parametrize(
    ("plan", "twins"),
    [
        (_plan({"path": "Calc.py", "change": "add"}), {"Calc.py": "calc.py"}),
        (_plan({"path": "Src/x.py", "change": "add"}), {"Src": "src"}),
        (
            _plan({"path": "notes.md", "change": "add"}, {"path": "NOTES.md", "change": "add"}),
            {"notes.md": "NOTES.md"},
        ),
        (
            _plan({"path": "CAFE\u0301.py", "change": "rename", "from": "README.md"}),
            {"CAFE\u0301.py": "caf\u00e9.py"},
        ),
    ],
    ids=["case", "folder", "two-new-names", "rename-to-a-twin"],
)
def test_a_plan_naming_a_twin_of_the_base_tree_is_caught_before_approval(
    plan: dict[str, object], twins: dict[str, str]
) -> None:
    assert _plan_twins(plan) == twins


@pytest.mark.parametrize(
    "plan",
    [
        _plan({"path": "Calc.py", "change": "rename", "from": "calc.py"}),  # case-only rename
        _plan({"path": "calc.py", "change": "delete"}, {"path": "CALC.py", "change": "add"}),
        _plan({"path": "calc.py", "change": "modify"}, {"path": "src/new.py", "change": "add"}),
    ],
    ids=["case-rename", "delete-then-add", "modify-and-add"],
)
def test_a_plan_keeping_one_name_per_folded_form_has_no_twins(plan: dict[str, object]) -> None:
    assert _plan_twins(plan) == {}


def test_a_plan_that_only_modifies_reads_no_tree() -> None:
    assert not FoldedTwins.of_plan(_plan({"path": "calc.py", "change": "modify"})).brings_names
