"""A pinned pytest whose output kodo cannot read still verifies nothing (red-team
helper-130).

``verification_ran_nothing`` (shared/domain/ran_tests.py) reads the last runner summary
of a command that exited 0, and "output without a summary ... is judged by the exit
status". Two ordinary pinned pytest command lines print no summary it can read:

* ``python3 -m pytest -qq`` (a common CI setting): pytest prints ``s [100%]`` and no
  counts line at all;
* ``python3 -m pytest -q --color=yes`` (pinned so CI logs keep colours): the counts
  line is wrapped in ANSI escapes (``\\x1b[33m1 skipped\\x1b[0m\\x1b[33m in 0.05s``), which
  ``_PYTEST_SUMMARY`` does not match.

The approved change breaks ``add`` and marks its one test skipped (the very change the
rule exists for, caught under ``-q``): under either pin the run succeeds "verified".

(The sandbox's python3 has no pytest; the base vendors the suite's, as
test_rt120_pytest_doctest_text.py does.)

Safe outcome: the run does not succeed: escapes are stripped before the summary is
read, and a pinned pytest or unittest whose output holds no summary at all fails closed
(or such a pin is refused when the policy is read).
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile
from tests.security.test_rt120_pytest_doctest_text import BROKEN, vendored_pytest

pytestmark = pytest.mark.security

SKIPPED = (
    "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n"
    "@@ -6,3 +6,4 @@ from calc import add\n class AddTest(unittest.TestCase):\n"
    '+    @unittest.skip("flaky on CI")\n'
    "     def test_adds(self) -> None:\n"
    "         self.assertEqual(add(2, 3), 5)\n"
)


@pytest.mark.parametrize(
    "options", [("-qq",), ("-q", "--color=yes"), ("-q",)], ids=["qq", "color", "control-q"]
)
def test_a_pinned_pytest_that_skipped_every_test_does_not_verify_the_run(
    hostile: Hostile, options: tuple[str, ...]
) -> None:
    argv = ("python3", "-m", "pytest", "-p", "no:cacheprovider", *options)
    pinned = "[policy]\nverify_commands = [[" + ", ".join(f'"{a}"' for a in argv) + "]]\n"
    tag = "pytest-unread-" + "".join(o.replace("=", "-").strip("-") for o in options)
    repo = hostile.repo(tag, [{".kodo/policy.toml": pinned, **vendored_pytest()}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(
            ("calc.py", "modify"), ("test_calc.py", "modify"), design="add subtracts."
        ),
        patch=attacks.patch(BROKEN, SKIPPED),
        build=attacks.build(*argv),
    )

    outcome = hostile.drive(repo, fixture)

    assert "[100%]" in outcome.command_output(), outcome.describe()  # pytest ran
    assert outcome.status != "succeeded", (
        f"the pinned `{' '.join(argv)}` skipped the only test, printed no summary kodo"
        f" reads, and the run succeeded over add(2, 3) == -1\n{outcome.describe()}"
    )
