"""A module beside the tests, which the pinned runner puts first on ``sys.path``, cannot
stand in for the module the patch changes (red-team helper-115 on helper-113's
``module_shadow``).

``ModuleShadows`` compares a plan's new file only with the base's files *in the same
folder*. But a runner puts folders of its own in front of the checkout: ``python3 -m
unittest discover -s tests`` inserts ``tests/`` at ``sys.path[0]`` (its top-level
directory defaults to the start directory), and pytest's default ``prepend`` import mode
inserts each test file's first folder without ``__init__.py``. So with the tests in
``tests/test_calc.py`` (``from calc import add``), a plan modifying ``calc.py`` and adding
``tests/calc.py`` (reads as "a test double") has the pinned command import
``tests/calc.py``: the approver reads the change to ``calc.py``, the tests run another
``add``, and the run succeeds with ``add(2, 3) == -1`` on its branch.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security

ARGV = ["python3", "-m", "unittest", "discover", "-s", "tests", "-q"]
PINNED = "[policy]\nverify_commands = [[" + ", ".join(f'"{a}"' for a in ARGV) + "]]\n"
TESTS = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_adds(self) -> None:\n"
    "        self.assertEqual(add(2, 3), 5)\n"
)
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
DOUBLE = '"""A test double for calc."""\n\n\ndef add(a: int, b: int) -> int:\n    return a + b\n'


def test_a_module_on_the_runners_own_path_cannot_stand_in_for_the_changed_one(
    hostile: Hostile,
) -> None:
    """Rule module_shadow (or verify_pinned): a plan adding ``tests/calc.py``, which the
    pinned ``unittest discover -s tests`` imports in place of the base's ``calc.py``,
    fails closed before approval; a broken ``add`` never succeeds."""
    fixture = hostile.fixture(
        "runner-path-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("tests/calc.py", "add"),
            design="Tidy add; a test double for the calculator.",
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("tests/calc.py", DOUBLE)),
        build=attacks.build(*ARGV),
    )
    repo = hostile.repo(
        "runner-path-shadow",
        [{".kodo/policy.toml": PINNED, "test_calc.py": None, "tests/test_calc.py": TESTS}],
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest discover -s tests' imported the plan's"
        " tests/calc.py in place of the patched calc.py, and the run succeeded with"
        f" add(2, 3) == -1 on its branch\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "module_shadow", "verify_pinned")
