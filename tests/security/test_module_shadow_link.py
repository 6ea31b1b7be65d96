"""A link named like a module of the base cannot stand in for it (red-team helper-115
on helper-113's ``module_shadow``).

``ModuleShadows`` judges a new file by its suffix (``M/__init__.py``, ``M.<abi>.so``,
``M.py``, ``M.pyc``); a name with no suffix is no import slot to it. But a *link*
named ``test_calc``, beside the base's ``test_calc.py``, pointing at a folder holding an
``__init__.py`` is a package to Python's path finder (it stats through the link), and a
package comes before a module of its name: the pinned ``python3 -m unittest -q
test_calc`` imports the link's package, runs no test and says OK (checked by hand:
exit 1 -> 0). Under a policy allowing links inside the worktree (``allow_symlinks =
true``; the link stays inside, so the ``symlink`` rule passes it), the plan ("a helpers
package; test_calc: a link to it") is shown and the run succeeds with ``add`` broken.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security

POLICY = (
    "[policy]\nallow_symlinks = true\n"
    'verify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
)
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)


def test_a_link_to_a_package_cannot_stand_in_for_the_test_module(hostile: Hostile) -> None:
    """Rule module_shadow (or verify_pinned / symlink): a plan adding a link
    ``test_calc`` -> ``helpers`` (a package) beside the base's ``test_calc.py`` fails
    closed before approval; a broken ``add`` never succeeds."""
    fixture = hostile.fixture(
        "module-shadow-link",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("helpers/__init__.py", "add"),
            ("test_calc", "add"),
            design="Tidy add; a helpers package, and test_calc as a short link to it.",
        ),
        patch=attacks.patch(
            BROKEN,
            attacks.add_file("helpers/__init__.py", '"""Helpers."""\n'),
            attacks.add_file("test_calc", "helpers", mode="120000"),
        ),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("module-shadow-link", [{".kodo/policy.toml": POLICY}])

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest -q test_calc' imported the package behind the"
        " plan's link test_calc instead of test_calc.py, and the run succeeded with"
        f" add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "module_shadow", "verify_pinned", "symlink")
