"""A plan is shown for approval only if its entries agree with the base tree: what it
modifies, deletes or renames from is a file there; what it adds or renames to is not."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.change_check import PLAN_BASE_RULE, PlanAgainstBase

BASE = ["README.md", "src/app.py", "src/util/strings.py", "docs"]


def _plan(*files: dict[str, str]) -> dict[str, Any]:
    return {"summary": "s", "files": list(files)}


def _judged(plan: dict[str, Any], base: list[str] = BASE) -> list[str]:
    check = PlanAgainstBase(plan)
    for name in base:
        check.feed(name)
    return check.disagreements()


def test_a_plan_true_to_the_base_tree_agrees() -> None:
    plan = _plan(
        {"path": "src/app.py", "change": "modify"},
        {"path": "README.md", "change": "delete"},
        {"path": "src/new.py", "change": "add"},
        {"path": "src/util/text.py", "change": "rename", "from": "src/util/strings.py"},
    )
    assert _judged(plan) == []
    assert PlanAgainstBase(plan).violation() is not None  # fed nothing: nothing exists


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        # the carried hole: a twin of a tracked name, read as that file by an approver
        ({"path": "README.MD", "change": "modify"}, "README.MD is not a file of the base"),
        ({"path": "gone.py", "change": "delete"}, "gone.py is not a file of the base"),
        ({"path": "src", "change": "modify"}, "src is not a file of the base"),
        (
            {"path": "b.py", "change": "rename", "from": "a.py"},
            "a.py is not a file of the base",
        ),
        ({"path": "src/app.py", "change": "add"}, "src/app.py is a file of the base tree"),
        ({"path": "src/util", "change": "add"}, "src/util is a folder of the base tree"),
        (
            {"path": "README.md", "change": "rename", "from": "src/app.py"},
            "README.md is a file of the base tree",
        ),
        (
            {"path": "docs/index.md", "change": "add"},
            "docs/index.md lies below docs, a file of the base tree",
        ),
    ],
)
def test_an_entry_the_base_tree_does_not_bear_out_is_named(
    entry: dict[str, str], said: str
) -> None:
    (found,) = _judged(_plan(entry))
    assert found.startswith(said)


def test_a_file_the_plan_deletes_may_become_a_folder() -> None:
    plan = _plan({"path": "docs", "change": "delete"}, {"path": "docs/a.md", "change": "add"})
    assert _judged(plan) == []


def test_names_are_quoted_in_ascii_so_lookalikes_differ() -> None:
    (found,) = _judged(_plan({"path": "cafe\u0301.py", "change": "modify"}), ["caf\u00e9.py"])
    assert found.startswith("cafe\\u0301.py is not a file")


def test_the_violation_names_its_rule_and_bounds_its_list() -> None:
    plan = _plan(*({"path": f"m{i}.py", "change": "modify"} for i in range(25)))
    check = PlanAgainstBase(plan)
    violation = check.violation()
    assert violation is not None
    assert violation.rule == PLAN_BASE_RULE
    assert "and 5 more" in violation.detail
    assert violation.detail.count("not a file") == 20
