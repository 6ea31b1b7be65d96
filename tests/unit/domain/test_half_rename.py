"""A plan's rename that the patch only half makes is a change the approver never read
(red-team helper-108; failed while a half move passed as a planned delete).

helper-106 refused plans that give one name two fates, because the approver reads
``modify tests/test_calc.py`` and the patch deletes the tests inside the plan's unioned
kinds. The same read-one-thing-get-another survives in the patch check:
``rename tests/test_calc.py -> tests/test_arith.py: clearer name`` is approved, the
patch only deletes tests/test_calc.py, and check_changes finds nothing wrong:
``_planned_effects`` lets the source be deleted, the missing add is merely listed as
``planned_but_untouched`` (README: "A patch may leave planned files alone"). Leaving a
modify undone leaves a file as it was; leaving a rename's add undone turns the move the
approver signed into the deletion of the test suite.
"""

from __future__ import annotations

from shared.domain.change_check import IndexChange, check_changes
from shared.domain.policy import Policy

Z40 = "0" * 40

PLAN = {
    "design": "Rename the tests to match the module name.",
    "files": [
        {
            "path": "tests/test_arith.py",
            "change": "rename",
            "from": "tests/test_calc.py",
            "why": "clearer name",
        }
    ],
    "risks": [],
    "tests": ["pytest"],
}


def test_a_rename_whose_target_is_never_added_is_refused() -> None:
    deleted_only = [IndexChange("D", "tests/test_calc.py", "100644", "000000", Z40, removed=40)]
    report = check_changes(deleted_only, PLAN, Policy())
    assert report.violations, (
        "the approver signed a rename; the patch deleted the source and added nothing,"
        f" and no rule objected (untouched: {report.untouched})"
    )
