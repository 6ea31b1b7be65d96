"""A verification that exits 0 has verified something only if its runner ran a test:
Python 3.11's unittest exits 0 having found none, and both runners exit 0 when every
test they ran was skipped."""

from __future__ import annotations

import pytest

from shared.domain.ran_tests import RULE, ran_nothing

UNITTEST = ["python3", "-m", "unittest", "-q", "test_calc"]
LINE = "-" * 70


def unittest_tail(ran: int, verdict: str = "OK") -> str:
    noun = "test" if ran == 1 else "tests"
    return f"..\n{LINE}\nRan {ran} {noun} in 0.004s\n\n{verdict}\n"


def test_unittest_that_found_no_test_ran_nothing_and_says_so() -> None:
    found = ran_nothing(UNITTEST, unittest_tail(0))
    assert found is not None
    assert found.rule == RULE
    assert "unittest ran 0 tests" in found.detail
    assert "python3 -m unittest -q test_calc exited 0" in found.detail


@pytest.mark.parametrize(
    ("tail", "verified"),
    [
        (unittest_tail(1), True),
        (unittest_tail(12), True),
        (unittest_tail(3, "OK (skipped=1)"), True),
        (unittest_tail(3, "OK (skipped=3)"), False),
        (unittest_tail(3, "OK (skipped=3, expected failures=1)"), False),
        (unittest_tail(2, "OK (expected failures=1, skipped=2)"), False),
        (unittest_tail(1, "OK (expected failures=1)"), False),  # helper-123
        (unittest_tail(2, "OK (skipped=1, expected failures=1)"), False),
        (unittest_tail(3, "OK (skipped=1, expected failures=1)"), True),
    ],
)
def test_unittest_verified_something_only_if_a_test_ran_unskipped(
    tail: str, verified: bool
) -> None:
    assert (ran_nothing(UNITTEST, tail) is None) is verified


def test_the_runners_last_summary_counts_not_one_a_test_printed_before_it() -> None:
    """A test module can print a summary of its own; only the runner's, printed last,
    is read, and a printed one can only make its own verification fail."""
    printed_first = f"Ran 5 tests in 0.001s\n\nOK\n{unittest_tail(0)}"
    assert ran_nothing(UNITTEST, printed_first) is not None
    printed_after = f"{unittest_tail(4)}Ran 0 tests in 0.000s\n"
    assert ran_nothing(UNITTEST, printed_after) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["python3", "-m", "unittest"],
        ["python", "-m", "unittest", "discover", "-s", "tests"],
        ["/usr/bin/python3.11", "-Bm", "unittest"],
        ["env", "PYTHONHASHSEED=0", "python3", "-m", "unittest.__main__"],
    ],
)
def test_every_spelling_of_a_unittest_run_is_read(argv: list[str]) -> None:
    assert ran_nothing(argv, unittest_tail(0)) is not None


@pytest.mark.parametrize(
    ("summary", "verified"),
    [
        ("3 passed in 0.02s", True),
        ("1 failed, 2 passed in 0.02s", True),  # (it exited 0 only under a plugin's say)
        ("========= 4 passed, 1 skipped in 0.10s =========", True),
        ("1 xpassed in 0.01s", True),
        ("5 skipped in 0.01s", False),
        ("========== 2 skipped, 3 deselected in 0.05s ==========", False),
        ("1 xfailed, 1 skipped in 0.01s", False),
        ("2 skipped, 1 warning in 0.01s (0:00:00)", False),
        ("2 skipped, 1 subtests passed in 0.12s", False),  # pytest 9 (helper-123)
        ("1 passed, 3 subtests passed in 0.12s", True),
    ],
)
def test_pytest_verified_something_only_if_a_test_ran_to_a_verdict(
    summary: str, verified: bool
) -> None:
    tail = f"ss                                                   [100%]\n{summary}\n"
    for argv in (["pytest", "-q"], ["python3", "-m", "pytest"], ["pytest-3"]):
        assert (ran_nothing(argv, tail) is None) is verified, argv


@pytest.mark.parametrize(
    "argv",
    [["make", "test"], ["python3", "-m", "coverage", "run", "-m", "unittest"], ["tox"]],
)
def test_a_runner_inside_another_program_is_read_the_same(argv: list[str]) -> None:
    """A pinned ``make test`` runs the same unittest (red-team helper-123)."""
    assert ran_nothing(argv, unittest_tail(0)) is not None
    assert ran_nothing(argv, unittest_tail(2)) is None
    assert ran_nothing(argv, "== 3 skipped in 0.01s ==\n") is not None


def test_the_last_summary_of_either_runner_decides() -> None:
    unittest_then_pytest = f"{unittest_tail(0)}========= 2 passed in 0.01s =========\n"
    assert ran_nothing(["make", "test"], unittest_then_pytest) is None
    pytest_then_unittest = f"2 skipped in 0.01s\n{unittest_tail(3)}"
    assert ran_nothing(["make", "test"], pytest_then_unittest) is None
    assert ran_nothing(["make", "test"], f"2 passed in 0.01s\n{unittest_tail(0)}") is not None


def test_a_line_of_other_words_is_no_pytest_summary() -> None:
    assert ran_nothing(["make"], "12 files in 0.20s\n") is None
    assert ran_nothing(["make"], "3 warnings, 2 objects in 1.0s\n") is None


def test_another_programs_output_without_a_summary_is_judged_by_the_exit_status_alone() -> None:
    """Another runner's summary kodo cannot read (a Makefile running ``go test``)."""
    assert ran_nothing(["make", "test"], "x" * 5000) is None
    assert ran_nothing(["tox"], "ok: all tests passed\n") is None


def test_a_runner_kodo_knows_that_printed_no_summary_ran_nothing_it_can_see() -> None:
    """``pytest -qq`` prints no counts; a summary hidden otherwise says nothing either
    (red-team helper-130): the pin must show it."""
    found = ran_nothing(UNITTEST, "x" * 5000)
    assert found is not None
    assert "no unittest summary" in found.detail
    assert ran_nothing(["pytest", "-qq"], "s                    [100%]\n") is not None
    assert ran_nothing(["env", "A=1", "python3", "-m", "pytest"], "...\n") is not None


def test_colour_codes_are_read_past() -> None:
    coloured = "\x1b[33m\x1b[1m1 skipped\x1b[0m\x1b[33m in 0.01s\x1b[0m\n"
    assert ran_nothing(["pytest", "--color=yes"], coloured) is not None
    passed = "\x1b[32m===== \x1b[1m2 passed\x1b[0m\x1b[32m in 0.01s =====\x1b[0m\n"
    assert ran_nothing(["pytest", "--color=yes"], passed) is None


def test_make_s_word_that_it_ran_no_recipe_counts_only_without_a_summary() -> None:
    """A sub-make's word is about a folder's rule, and a summary after make's word is
    what ran (``make lint test``: lint was up to date, the tests ran)."""
    said = "make[1]: Nothing to be done for 'all'.\n"
    assert ran_nothing(["make", "test"], said) is None
    then_ran = f"make: 'lint' is up to date.\n{unittest_tail(2)}"
    assert ran_nothing(["make", "lint", "test"], then_ran) is None
    assert ran_nothing(["gmake", "test"], "gmake: 'test' is up to date.\n") is not None
