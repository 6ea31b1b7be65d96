"""Whether a passing verification ran any test, as a test runner's last summary says. Pure.

Python 3.11's unittest exits 0 when it finds no test (``Ran 0 tests ... OK``; 3.12
exits 5 for that), and both unittest and pytest exit 0 when every test they ran was
skipped or failed "as expected". A run was "verified" by a command that verified
nothing: a test module whose tests a change renamed away, a discovery folder it moved,
a ``skip`` or ``expectedFailure`` on every test. So a verification that exits 0 is read
once more: if the last test-runner summary in its output (unittest's ``Ran N tests``
and the status line after it, or pytest's closing counts) says no test ran to a verdict
of its own, it failed, under ``verification_ran_nothing``. Whatever the program: a
pinned ``make test`` or ``coverage run -m unittest`` runs the same runner inside
(red-team helper-123).

The last summary is the runner's own, printed after everything its tests print: a test
module can print one too, but only to make its own verification fail. Colour codes are
read past (``--color=yes`` wrapped pytest's counts in them). unittest counts skipped
subtests among ``skipped=``: a test whose subtests were all skipped counts as not run
(failing closed, if the test itself did more).

Output without a summary is judged by the exit status (another runner, whose summary
kodo cannot read), except in two cases (red-team helper-130). A pinned runner kodo knows
(``python -m pytest``, ``pytest``, ``python -m unittest``) that printed none ran no
test kodo can see to a verdict (``pytest -qq`` prints no counts): failed, so that its
pin is made with the summary shown. And make saying it ran no recipe for a goal
(``make: 'test' is up to date.``, ``Nothing to be done for 'test'``: a ``test`` rule
that is not ``.PHONY``, once a change adds a ``test/`` folder): it ran no test either.
"""

from __future__ import annotations

import re

from shared.domain.policy import Violation, runner_module

RULE = "verification_ran_nothing"

TAIL_BYTES = 16384
"""How much of a command's last output is kept for this reading (the summary is its
last lines; the head kept for the page may have been cut long before). Room for what
follows a summary honestly: warnings at the interpreter's exit."""

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in \d+(?:\.\d+)?s$", re.MULTILINE)
_UNITTEST_OK = re.compile(r"^OK \(([a-z =0-9,]*)\)$", re.MULTILINE)
_UNITTEST_NOT_VERDICTS = ("skipped", "expected failures")
"""Counts of unittest's ``OK (...)`` that ran no test to a verdict of its own."""

_PYTEST_SUMMARY = re.compile(
    r"^=*[^\S\n]*((?:\d+ [a-z]+(?: [a-z]+)?, )*\d+ [a-z]+(?: [a-z]+)?) in \d+(?:\.\d+)?s"
    r"(?: \([^)\n]*\))?[^\S\n]*=*$",
    re.MULTILINE,
)
"""One line: blanks around it are never newlines (a whitespace class there ran from every line's
start across all the blank lines after it, quadratic in a tail of newlines: 0.6 s of CPU
for 4 KiB, red-team helper-126)."""
_PYTEST_VERDICTS = frozenset({"passed", "failed", "error", "errors", "xpassed"})
"""pytest's outcomes of a test that ran its body to a verdict."""
_PYTEST_OUTCOMES = _PYTEST_VERDICTS | {
    "skipped",
    "deselected",
    "xfailed",
    "warning",
    "warnings",
    "rerun",
    *(f"subtests {o}" for o in ("passed", "failed", "skipped", "xfailed", "xpassed")),
}
"""Every count pytest's last line may hold (pytest 9 counts subtests apart: ``2
skipped, 1 subtests passed``, the subtests of a test that then skipped itself). A line
of other words is no pytest summary."""


_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
"""A terminal control sequence (colours, cursor moves): read past, never shown here."""

_MAKE_RAN_NO_RECIPE = re.compile(
    r"^[\w.+-]*make: (?:Nothing to be done for [`'\u2018](?P<goal>[^\n]*)['\u2019]\."
    r"|[`'\u2018](?P<current>[^\n]*)['\u2019] is up to date\.)$",
    re.MULTILINE,
)
"""The top-level make's word that a goal needed no recipe (a sub-make's, ``make[1]:``,
is about a folder's rule, not the goal kodo ran)."""

KNOWN_RUNNERS = frozenset({"pytest", "unittest"})
"""The runners whose summary kodo reads: pinned, one must print it."""


def ran_nothing(argv: list[str] | tuple[str, ...], tail: str) -> Violation | None:
    """``verification_ran_nothing`` if ``tail`` (the end of the output of ``argv``,
    which exited 0) ends on a test runner's summary saying no test ran to a verdict; or,
    with no summary, on make's word that it ran no recipe, or when ``argv`` itself runs
    a runner kodo knows, whose summary is missing."""
    if "\x1b" in tail:
        tail = _CSI.sub("", tail)
    unittest = _last(_UNITTEST_RAN, tail)
    pytest = _last_pytest(tail)
    if pytest is not None and (unittest is None or pytest.start() > unittest.start()):
        return _pytest(argv, pytest)
    if unittest is not None:
        return _unittest(argv, unittest, tail)
    nothing = _last(_MAKE_RAN_NO_RECIPE, tail)
    if nothing is not None:
        goal = nothing.group("goal") or nothing.group("current") or ""
        return _violation(argv, f"make ran no recipe for {goal[:80]!r}, so no test")
    runner = runner_module(argv)
    if runner in KNOWN_RUNNERS:
        return _violation(
            argv,
            f"its output holds no {runner} summary to say a test ran (an option such as"
            " -qq, or a plugin, hides it; pin the command with its summary shown)",
        )
    return None


def _violation(argv: list[str] | tuple[str, ...], said: str) -> Violation:
    return Violation(
        RULE,
        f"{' '.join(argv)} exited 0 but {said}: a verification that runs no test verifies"
        " nothing (make it find the tests, or pin a command that runs them)",
    )


def _unittest(argv: list[str] | tuple[str, ...], ran: re.Match[str], tail: str) -> Violation | None:
    count = int(ran.group(1))
    if count == 0:
        return _violation(argv, "unittest ran 0 tests")
    status = _UNITTEST_OK.search(tail, ran.end())
    counts = dict(_count(part) for part in status.group(1).split(", ")) if status else {}
    aside = sum(counts.get(kind, 0) for kind in _UNITTEST_NOT_VERDICTS)
    if aside >= count:
        said = ", ".join(f"{counts[k]} {k}" for k in _UNITTEST_NOT_VERDICTS if k in counts)
        return _violation(argv, f"unittest ran {count} and none to a verdict ({said})")
    return None


def _count(part: str) -> tuple[str, int]:
    name, _, value = part.partition("=")
    return name, int(value) if value.isdigit() else 0


def _last_pytest(tail: str) -> re.Match[str] | None:
    found = None
    for line in _PYTEST_SUMMARY.finditer(tail):
        if all(_outcome(part) in _PYTEST_OUTCOMES for part in line.group(1).split(", ")):
            found = line
    return found


def _outcome(part: str) -> str:
    return part.split(" ", 1)[1]


def _pytest(argv: list[str] | tuple[str, ...], summary: re.Match[str]) -> Violation | None:
    if any(_outcome(part) in _PYTEST_VERDICTS for part in summary.group(1).split(", ")):
        return None
    return _violation(argv, f"pytest ran no test to a verdict ({summary.group(1)})")


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the last one is wanted
        pass
    return found
