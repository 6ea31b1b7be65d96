"""pytest 9's summary naming subtests is not read, so a run whose every test was
skipped passes on its exit status (red-team helper-123).

pytest 9 (the suite's, vendored in test_rt120_pytest_doctest_text.py) counts subtests
in its last line: ``2 skipped, 1 subtests passed in 0.01s``. ``_PYTEST_SUMMARY``
(shared/domain/ran_tests.py) takes each part as ``<n> <one word>``, so that line does not
match at all; "output without a summary is judged by the exit status", 0 here. Both
real tests are skipped; the one subtest that "passed" is an empty block. Real output of
the real pytest is fed to ``ran_nothing`` (pure), as ExecuteST does with the tail.

Safe outcome: ``verification_ran_nothing`` (no test ran to a verdict: only subtests of a
skipped test passed), or at least a summary the rule cannot read is not a pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.domain.ran_tests import RULE, ran_nothing

pytestmark = pytest.mark.security

ARGV = ["python3", "-m", "pytest", "-q"]
TESTS = (
    "import pytest\n\nfrom calc import add\n\n\n"
    "@pytest.mark.skip(reason='add is being reworked')\n"
    "def test_adds():\n    assert add(2, 3) == 5\n\n\n"
    "def test_table(subtests):\n"
    "    with subtests.test(msg='table'):\n        pass\n"
    "    pytest.skip('table moved')\n"
)


def test_a_summary_that_counts_subtests_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (tmp_path / "test_calc.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "subtests passed" in output, output
    assert "2 skipped" in output, output

    found = ran_nothing(ARGV, output[-4096:])

    assert found is not None, f"pytest ran no test to a verdict, yet went unread:\n{output}"
    assert found.rule == RULE
