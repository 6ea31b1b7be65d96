"""make's own "nothing ran" words are read like a test runner's (red-team helper-130).

A pinned ``make test`` whose ``test`` rule is not ``.PHONY`` runs nothing once a file
or folder named ``test`` exists (the change adds a ``test/`` folder of tests): make says
``make: 'test' is up to date.`` (or ``Nothing to be done for 'test'.``) and exits 0.
There is no runner summary in that output, so ``ran_nothing`` returns None and the exit
status verifies the run (tests/security/test_rt130_make_runner_config.py drives it end
to end). Those lines are make's, printed after the rule is judged, and say that no
recipe ran: no test ran either.
"""

from __future__ import annotations

import pytest

from shared.domain.ran_tests import RULE, ran_nothing


@pytest.mark.parametrize(
    "said",
    [
        "make: 'test' is up to date.\n",
        "make: Nothing to be done for 'test'.\n",
        "make: `test' is up to date.\n",  # GNU make before 4.0 quotes so
    ],
)
def test_make_saying_it_ran_no_recipe_is_a_verification_that_ran_nothing(said: str) -> None:
    found = ran_nothing(("make", "test"), said)
    assert found is not None, (
        f"`make test` exited 0 saying {said.strip()!r}: no recipe ran, no test ran, and"
        " ran_nothing let the exit status verify the run"
    )
    assert found.rule == RULE


def test_control_a_make_that_ran_the_unittest_is_judged_by_its_summary() -> None:
    said = "python3 -m unittest -q test_calc\n----\nRan 1 test in 0.001s\n\nOK\n"
    assert ran_nothing(("make", "test"), said) is None
