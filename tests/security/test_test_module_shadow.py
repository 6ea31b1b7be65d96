"""A pinned ``python3 -m unittest -q test_calc`` runs the repository's ``test_calc.py``,
not a package the plan puts in front of it (red-team helper-113).

CompileST's ``runner_shadows`` guards the pinned *runner* (``unittest``) and the
standard library it imports. But the pinned argv names a second module: the tests,
``test_calc``, which unittest imports by name with the checkout first on ``sys.path``.
Python's path finder prefers a package (``test_calc/__init__.py``) to a module
(``test_calc.py``) in the same folder, so a plan adding ``test_calc/__init__.py`` (it
reads as "make the tests a package") makes the pinned command import the patch's
package instead: ``test_calc.py`` never runs, unittest reports "Ran 0 tests ... OK" and
exits 0, and the run succeeds with ``add`` returning ``a - b``. Nothing in the plan edits
a test, so no approver reads it as one.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)


def test_a_package_cannot_stand_in_for_the_pinned_test_module(hostile: Hostile) -> None:
    """Rule verify_pinned: a plan adding ``test_calc/__init__.py`` beside the base's
    ``test_calc.py`` (named by the pinned argv) fails closed before approval, or the
    pinned command runs ``test_calc.py`` and fails; a broken ``add`` never succeeds."""
    fixture = hostile.fixture(
        "pinned-test-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("test_calc/__init__.py", "add"),
            design="Tidy add; make the tests a package.",
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("test_calc/__init__.py", '"""Tests."""\n')),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("pinned-test-shadow", [{".kodo/policy.toml": PINNED}])

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest -q test_calc' imported the plan's test_calc/"
        " package instead of test_calc.py and the run succeeded with add(2, 3) == -1"
        f"\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "module_shadow")
