"""make running no recipe is read from one message only (red-team helper-132).

helper-130's fix (shared/domain/ran_tests.py ``_MAKE_RAN_NO_RECIPE``) reads the
top-level make's ``make: 'test' is up to date.`` / ``Nothing to be done for 'test'`` as
a verification that ran nothing. A change that adds a file or folder named like a
target still makes a pinned make run no test and say nothing kodo reads:

* ``make -s test`` (pinned quiet, as CI often is): ``-s`` silences the "up to date"
  message itself; make prints nothing and exits 0;
* the test recipe is a sub-make, ``$(MAKE) -C tests run``: the change adds
  ``tests/run/`` and the sub-make says ``make[1]: 'run' is up to date.``, which the
  pattern skips on purpose ("about a folder's rule");
* ``test`` is .PHONY with a recipe of its own and the runner is its prerequisite
  ``unit``: the change adds a ``unit/`` folder of tests, ``unit`` is up to date without
  a word and ``test``'s own recipe (``@echo all checks done``) runs.

Every case exits 0 with no runner summary, ``make`` is no runner kodo knows, so the exit
status decides and the run succeeds over ``add(2, 3) == -1``.

Safe outcome: the run does not succeed (verification_ran_nothing, or verify_pinned
when the plan adds a name a pinned makefile has as a target).
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
RUNNER = "python3 -m unittest -q test_calc"
BODY = "from calc import add\n\nassert callable(add)\n"

CASES = {
    "silent": (
        ("make", "-s", "test"),
        {"Makefile": f"test:\n\t{RUNNER}\n"},
        "test/test_more.py",
    ),
    "sub-make": (
        ("make", "test"),
        {
            "Makefile": ".PHONY: test\ntest:\n\t$(MAKE) -C tests run\n",
            "tests/Makefile": f"run:\n\tcd .. && {RUNNER}\n",
        },
        "tests/run/test_more.py",
    ),
    "prerequisite": (
        ("make", "test"),
        {"Makefile": f".PHONY: test\ntest: unit\n\t@echo all checks done\n\nunit:\n\t{RUNNER}\n"},
        "unit/test_more.py",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_target_made_up_to_date_by_the_change_does_not_verify(
    hostile: Hostile, case: str
) -> None:
    argv, files, added = CASES[case]
    pinned = "[policy]\nverify_commands = [[" + ", ".join(f'"{a}"' for a in argv) + "]]\n"
    tag = f"rt132-make-quiet-{case}"
    repo = hostile.repo(tag, [{".kodo/policy.toml": pinned, **files}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("calc.py", "modify"), (added, "add"), design="add subtracts; tests."),
        patch=attacks.patch(BROKEN, attacks.add_file(added, BODY)),
        build=attacks.build(*argv),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        f"`{' '.join(argv)}` ran no test once the change added {added!r} and the run"
        f" succeeded over add(2, 3) == -1\n{outcome.describe()}"
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_control_without_the_added_name_the_broken_add_fails(hostile: Hostile, case: str) -> None:
    argv, files, _ = CASES[case]
    pinned = "[policy]\nverify_commands = [[" + ", ".join(f'"{a}"' for a in argv) + "]]\n"
    tag = f"rt132-make-quiet-control-{case}"
    repo = hostile.repo(tag, [{".kodo/policy.toml": pinned, **files}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("calc.py", "modify"), design="add subtracts."),
        patch=attacks.patch(BROKEN),
        build=attacks.build(*argv),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", outcome.describe()
    assert "FAILED" in outcome.command_output(), outcome.describe()
