"""A pinned verification command runs the program it pins, not one the patch put in its
place (red-team helper-104; failed before CompileST refused such a plan).

``verify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]`` exists so a run
succeeds only if the repository's own tests pass (unpinned, ``python3 -c pass`` made any
change "succeed"). ``python3 -m NAME`` imports NAME with the worktree first on
``sys.path``, so a patch adding a top-level ``unittest.py`` replaces the test runner
itself: the pinned argv, compared argument for argument, runs the patch's program, which
prints what a passing run prints and exits 0 while ``add`` is broken. The same holds for
``python3 -m pytest`` and a top-level ``pytest.py``. (Editing a test is patched code
run by design, and shows as a test edit; this replaces the pinned runner, so the pin
verifies nothing.)
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
RUNNER = (
    "import sys\n"
    "sys.stderr.write('.\\n----------------------------------------------------------------------\\n')\n"
    "sys.stderr.write('Ran 1 test in 0.000s\\n\\nOK\\n')\n"
)


def test_a_patch_cannot_replace_the_pinned_test_runner(hostile: Hostile) -> None:
    """Rule: under a pinned ``python3 -m MODULE`` the verification runs MODULE as the
    toolchain has it (or a patch adding a top-level MODULE.py / MODULE/ fails closed,
    naming the pin); a broken ``add`` never makes the run succeed."""
    fixture = hostile.fixture(
        "pinned-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"), ("unittest.py", "add"), design="Tidy add; a test helper."
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("unittest.py", RUNNER)),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("pinned-shadow", [{".kodo/policy.toml": PINNED}])

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned verification ran the patch's own 'unittest' and the run succeeded"
        f" with add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "verify_pinned")
    assert "unittest.py would be imported by python -m unittest" in (outcome.run["error"] or "")
    assert outcome.plan is None, f"a plan was shown for approval\n{outcome.describe()}"


def test_the_repository_s_own_package_may_change_under_a_pinned_python_m(
    hostile: Hostile,
) -> None:
    """A pinned ``python3 -m calcpkg.check`` runs the repository's own package: a plan
    adding a file to it is the repository's code changing, not a shadow of a runner."""
    pinned = '[policy]\nverify_commands = [["python3", "-m", "calcpkg.check"]]\n'
    fixture = hostile.fixture(
        "own-package",
        plan=attacks.plan(("calcpkg/extra.py", "add"), design="One more module."),
        patch=attacks.patch(attacks.add_file("calcpkg/extra.py", "X = 1\n")),
        build=attacks.build("python3", "-m", "calcpkg.check"),
    )
    repo = hostile.repo(
        "own-package",
        [
            {
                ".kodo/policy.toml": pinned,
                "calcpkg/__init__.py": "",
                "calcpkg/check.py": "print('checked')\n",
            }
        ],
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status == "succeeded", outcome.describe()
