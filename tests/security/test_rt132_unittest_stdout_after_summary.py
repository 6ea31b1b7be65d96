"""False refusal: an honest unittest suite whose tests print is "ran nothing" (red-team
helper-132).

helper-130 made a pinned runner kodo knows (``python -m unittest``, pytest) that printed
no summary fail closed under ``verification_ran_nothing``, reading the summary in the
last TAIL_BYTES (4096) of the output. unittest writes its summary to stderr, unbuffered;
what the tests ``print()`` goes to stdout, which Python block-buffers (8 KiB) into a
pipe and flushes at interpreter exit, after the summary. A passing suite whose tests
printed a few KiB (debug output, a table) ends its output with that flush: the summary
is more than 4096 bytes from the end, and the honest run, whose one test passed, fails
as a verification that ran nothing.

Here the change is honest (add still adds; a new helper prints a 5000-byte report in
the test); the pinned ``python3 -m unittest -q test_calc`` exits 0, its output holds
``Ran 1 test`` and ``OK``.

Safe outcome: the run succeeds (the runner's summary read wherever the runner printed
it: stderr kept apart, or the tail read by stream, or a result file).
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

ARGV = ("python3", "-m", "unittest", "-q", "test_calc")
PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
PRINTS = (
    "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n"
    "@@ -7,2 +7,3 @@ class AddTest(unittest.TestCase):\n"
    "     def test_adds(self) -> None:\n"
    "+        print('\\n'.join(f'{i:>6} + {i:>6} = {add(i, i):>8}' for i in range(200)))\n"
    "         self.assertEqual(add(2, 3), 5)\n"
)


def test_an_honest_suite_that_prints_is_verified(hostile: Hostile) -> None:
    tag = "rt132-unittest-prints"
    repo = hostile.repo(tag, [{".kodo/policy.toml": PINNED}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("test_calc.py", "modify"), design="print a table of sums."),
        patch=attacks.patch(PRINTS),
        build=attacks.build(*ARGV),
    )

    outcome = hostile.drive(repo, fixture)

    output = outcome.command_output()
    assert "199 +    199 =      398" in output, outcome.describe()  # the test ran and printed
    assert outcome.status == "succeeded", (
        "the pinned unittest ran and passed its one test, but its summary (stderr) came"
        f" before the tests' buffered stdout and out of the 4096-byte tail\n{outcome.describe()}"
    )
