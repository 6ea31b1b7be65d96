"""A plan that gives one tracked file two changes is never shown for approval (rule
plan_base; red-team helper-106, failed before names given two fates were counted).

The hostile plan lists ``modify test_calc.py`` ("Part of the check.") and, further down,
``delete test_calc.py``. PlanAgainstBase checks each name against the base tree alone
(test_calc.py is a file there: both entries "agree"), so the plan is shown. git records
one change per path, so the plan can never land as it reads: the approver who read
"modify test_calc.py" approves, the patch deletes the tests, and the patch is inside
the plan (the plan's kinds for the path are unioned: modify or delete). Approved, the
run succeeds with the tests gone (observed on this stack: status succeeded, no error).
"""

from __future__ import annotations

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Hostile


def _delete(path: str, content: str) -> str:
    lines = content.splitlines()
    body = "".join(f"-{line}\n" for line in lines)
    return (
        f"diff --git a/{path} b/{path}\ndeleted file mode 100644\n"
        f"--- a/{path}\n+++ /dev/null\n@@ -1,{len(lines)} +0,0 @@\n{body}"
    )


def test_a_plan_giving_a_tracked_file_two_changes_is_never_shown(hostile: Hostile) -> None:
    name = "two-fates"
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(
            ("test_calc.py", "modify"), ("calc.py", "modify"), ("test_calc.py", "delete")
        ),
        patch=attacks.patch(_delete("test_calc.py", FILES["test_calc.py"])),
        build=attacks.build("python3", "-c", "print(1)"),
    )
    outcome = hostile.drive(hostile.repo(name), fixture, approve=False)
    assert outcome.plan is None, (
        "a plan naming test_calc.py for both modify and delete was shown for approval"
        f"\n{outcome.describe()}"
    )
    assert "plan_base" in (outcome.run.get("error") or ""), outcome.describe()
