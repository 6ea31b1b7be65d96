"""A plan names each path for one change only (PlanAgainstBase, rule plan_base; red-team
helper-106, failed before names given two fates were counted).

PlanAgainstBase promises that a plan shown for approval "can land as it reads". A plan
whose entries give one tracked file two different fates (``modify calc.py`` *and*
``delete calc.py``; ``rename calc.py -> lib.py`` *and* ``modify calc.py``) can never
land as it reads: git records one change per path, so at most one of those entries
happens. The approver reads ``modify calc.py: fix the typo`` and approves; the patch
that deletes calc.py is inside the plan (``_planned_effects`` unions the kinds), so
nothing after approval stops it (tests/security/test_rt106_plan_two_fates.py: such a
plan is shown, and once approved the run succeeds with the file deleted). Likewise one
file renamed to two names, or one new name both a file and a folder of new files. Such a
plan must be re-asked like any other entry the base tree does not bear out.
"""

from __future__ import annotations

import pytest

from shared.domain.change_check import PLAN_BASE_RULE, PlanAgainstBase

BASE = ["calc.py", "tests/test_calc.py", "README.md"]


def _judged(*files: dict[str, str]) -> PlanAgainstBase:
    check = PlanAgainstBase({"design": "d", "files": list(files), "risks": [], "tests": []})
    for name in BASE:
        check.feed(name)
    return check


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(
            [
                {"path": "calc.py", "change": "modify", "why": "fix the typo in add()"},
                {"path": "calc.py", "change": "delete", "why": "superseded"},
            ],
            id="modify-and-delete",
        ),
        pytest.param(
            [
                {"path": "calc.py", "change": "modify", "why": "fix the typo"},
                {"path": "lib.py", "change": "rename", "from": "calc.py", "why": "move"},
            ],
            id="modify-and-rename-away",
        ),
        pytest.param(
            [
                {"path": "tests/test_calc.py", "change": "delete", "why": "flaky"},
                {
                    "path": "tests/keep.py",
                    "change": "rename",
                    "from": "tests/test_calc.py",
                    "why": "keep the tests",
                },
            ],
            id="delete-and-rename-away",
        ),
        pytest.param(
            [
                {"path": "lib.py", "change": "rename", "from": "calc.py", "why": "move"},
                {"path": "core.py", "change": "rename", "from": "calc.py", "why": "move too"},
            ],
            id="one-file-renamed-to-two",
        ),
        pytest.param(
            [
                {"path": "pkg", "change": "add", "why": "a module"},
                {"path": "pkg/__init__.py", "change": "add", "why": "a package"},
            ],
            id="a-new-name-both-file-and-folder",
        ),
    ],
)
def test_a_path_given_two_fates_is_not_shown(files: list[dict[str, str]]) -> None:
    found = _judged(*files).violation()
    assert found is not None, "a plan giving one tracked file two changes was accepted"
    assert found.rule == PLAN_BASE_RULE
