"""A module beside tests that are a package still stands in for the changed one (red-team
helper-117 on helper-115's cross-folder ``module_shadow``).

``ModuleShadows._on_a_path`` takes a folder holding ``__init__.py`` for one no runner
puts on ``sys.path``. But ``python3 -m unittest discover -s tests`` inserts its start
directory (the default top-level directory) at ``sys.path[0]`` whether it is a package
or not (``unittest.loader.TestLoader.discover``). With the tests in a package (a very
common layout: ``tests/__init__.py``), a plan modifying ``calc.py`` and adding
``tests/calc.py`` ("a test double") is shown, approved and verified against the double:
the run succeeds with ``add(2, 3) == -1`` on its branch.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed
from tests.security.test_module_shadow_on_runner_path import (
    ARGV,
    BROKEN,
    DOUBLE,
    PINNED,
    TESTS,
)

pytestmark = pytest.mark.security


def test_a_module_beside_packaged_tests_cannot_stand_in_for_the_changed_one(
    hostile: Hostile,
) -> None:
    fixture = hostile.fixture(
        "packaged-tests-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("tests/calc.py", "add"),
            design="Tidy add; a test double for the calculator.",
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("tests/calc.py", DOUBLE)),
        build=attacks.build(*ARGV),
    )
    repo = hostile.repo(
        "packaged-tests-shadow",
        [
            {
                ".kodo/policy.toml": PINNED,
                "test_calc.py": None,
                "tests/__init__.py": "",
                "tests/test_calc.py": TESTS,
            }
        ],
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest discover -s tests' imported the plan's"
        " tests/calc.py (tests/ is a package, so module_shadow never compared it) in place"
        f" of the patched calc.py, and the run succeeded with add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "module_shadow", "verify_pinned")
