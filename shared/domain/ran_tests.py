"""Whether a passing verification ran any test, as its runner's last summary says. Pure.

Python 3.11's unittest exits 0 when it finds no test (``Ran 0 tests ... OK``; 3.12
exits 5 for that), and both unittest and pytest exit 0 when every test they ran was
skipped. A run was "verified" by a command that verified nothing: a test module whose
tests a change renamed away, a discovery folder it moved, a ``skip`` on every test. So
a verification that exits 0 is read once more: if its runner is unittest or pytest
(:func:`shared.domain.policy.runner_module`) and the last summary line in its output
says no test ran, or none that was not skipped, it failed, under
``verification_ran_nothing``.

The summary is the runner's own last line of its kind: a test module can print one
too, but only to make its own verification fail. Output without a summary (another
runner, a summary cut off in the middle) is judged by the exit status, as before.
"""

from __future__ import annotations

import re

from shared.domain.policy import Violation, runner_module

RULE = "verification_ran_nothing"

TAIL_BYTES = 4096
"""How much of a command's last output is kept for this reading (the summary is its
last lines; the head kept for the page may have been cut long before)."""

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in \d+(?:\.\d+)?s$", re.MULTILINE)
_UNITTEST_SKIPPED = re.compile(r"^OK \((?:[^)]*, )?skipped=(\d+)(?:, [^)]*)?\)$", re.MULTILINE)
_PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ [a-z]+, )*\d+ [a-z]+) in \d+(?:\.\d+)?s(?: \([^)\n]*\))?\s*=*$", re.MULTILINE
)
_PYTEST_VERIFYING = frozenset({"passed", "failed", "error", "errors", "xpassed"})
"""Outcomes of a test that ran its body to a verdict (``skipped``, ``deselected``,
``xfailed`` and ``warnings`` are not)."""


def ran_nothing(argv: list[str] | tuple[str, ...], tail: str) -> Violation | None:
    """``verification_ran_nothing`` if ``argv`` (which exited 0) is unittest or pytest
    and ``tail`` (the end of its output) says it ran no test that was not skipped."""
    runner = runner_module(argv)
    if runner == "unittest":
        return _unittest(argv, tail)
    if runner == "pytest":
        return _pytest(argv, tail)
    return None


def _violation(argv: list[str] | tuple[str, ...], said: str) -> Violation:
    return Violation(
        RULE,
        f"{' '.join(argv)} exited 0 but {said}: a verification that runs no test verifies"
        " nothing (make it find the tests, or pin a command that runs them)",
    )


def _unittest(argv: list[str] | tuple[str, ...], tail: str) -> Violation | None:
    ran = _last(_UNITTEST_RAN, tail)
    if ran is None:
        return None
    if int(ran.group(1)) == 0:
        return _violation(argv, "unittest ran 0 tests")
    skipped = _last(_UNITTEST_SKIPPED, tail[ran.end() :])
    if skipped is not None and int(skipped.group(1)) >= int(ran.group(1)):
        return _violation(argv, f"unittest skipped all {ran.group(1)} tests it found")
    return None


def _pytest(argv: list[str] | tuple[str, ...], tail: str) -> Violation | None:
    summary = _last(_PYTEST_SUMMARY, tail)
    if summary is None:
        return None
    outcomes = {part.split(" ", 1)[1] for part in summary.group(1).split(", ")}
    if outcomes & _PYTEST_VERIFYING:
        return None
    return _violation(argv, f"pytest ran no test to a verdict ({summary.group(1)})")


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the last one is wanted
        pass
    return found
