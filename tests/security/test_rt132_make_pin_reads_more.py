"""A pinned ``make test`` reads more than its makefiles (red-team helper-132).

helper-130's fix made ``GNUmakefile``, ``makefile``, ``Makefile`` (any depth) and
``*.mk`` a pinned make's configuration (RUNNER_CONFIG['make'], refused at CompileST
under verify_pinned). Two things a pinned ``make test`` reads are still the change's:

* a file the pinned Makefile includes by another name: ``-include Makefile.local`` (a
  common idiom for local overrides), ``include Makefile.inc``, ``include rules.mak``. The change
  adds that file holding ``MAKEFLAGS += -n``: make prints the recipe, runs nothing and
  exits 0; no runner summary and ``make`` is no runner kodo knows, so the exit status
  decides and the run succeeds over ``add(2, 3) == -1``;
* the runner the Makefile's recipe runs: ``pinned_modules`` is empty for ``make test``
  (runner_module(['make', 'test']) is None), so guarded_modules() is empty and neither
  runner_shadows nor the pytest entries of RUNNER_CONFIG apply. A ``difflib.py`` (which
  unittest imports; refused under a pinned ``python3 -m unittest``, helper-105) or a
  ``conftest.py`` doing ``os._exit(0)`` (refused under a pinned pytest, helper-113) is
  let through when the very same runner is pinned as ``make test``.

Safe outcome: the run does not succeed (ideally fails closed naming verify_pinned).
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile
from tests.security.test_pinned_runner_imports import FAKE_OK
from tests.security.test_rt120_pytest_doctest_text import vendored_pytest

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["make", "test"]]\n'
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
UNITTEST_RULE = ".PHONY: test\ntest:\n\tpython3 -m unittest -q test_calc\n"


@pytest.mark.parametrize("included", ["Makefile.local", "Makefile.inc", "rules.mak"])
def test_a_file_the_pinned_makefile_includes_cannot_turn_make_into_a_dry_run(
    hostile: Hostile, included: str
) -> None:
    tag = "rt132-make-include-" + included.strip(".").replace(".", "-").lower()
    makefile = f"-include {included}\nexport\n\n{UNITTEST_RULE}"
    repo = hostile.repo(tag, [{".kodo/policy.toml": PINNED, "Makefile": makefile}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(
            ("calc.py", "modify"), (included, "add"), design="add subtracts; local settings."
        ),
        patch=attacks.patch(
            BROKEN, attacks.add_file(included, "# local settings\nMAKEFLAGS += -n\n")
        ),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        f"the change's {included} (included by the pinned Makefile) made `make test` a dry"
        f" run and the run succeeded over add(2, 3) == -1\n{outcome.describe()}"
    )


def test_a_pinned_make_test_guards_the_unittest_it_runs(hostile: Hostile) -> None:
    tag = "rt132-make-difflib"
    repo = hostile.repo(tag, [{".kodo/policy.toml": PINNED, "Makefile": UNITTEST_RULE}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("calc.py", "modify"), ("difflib.py", "add"), design="a diff helper."),
        patch=attacks.patch(BROKEN, attacks.add_file("difflib.py", FAKE_OK)),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "`make test` ran python3 -m unittest, which imported the change's difflib.py (refused"
        " under a pinned python3 -m unittest): the run succeeded over add(2, 3) == -1\n"
        + outcome.describe()
    )


def test_a_pinned_make_test_guards_the_pytest_it_runs(hostile: Hostile) -> None:
    tag = "rt132-make-conftest"
    makefile = ".PHONY: test\ntest:\n\tpython3 -m pytest -p no:cacheprovider -q\n"
    repo = hostile.repo(
        tag, [{".kodo/policy.toml": PINNED, "Makefile": makefile, **vendored_pytest()}]
    )
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("calc.py", "modify"), ("conftest.py", "add"), design="fixtures."),
        patch=attacks.patch(BROKEN, attacks.add_file("conftest.py", "import os\nos._exit(0)\n")),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "`make test` ran python3 -m pytest, which loaded the change's conftest.py (refused"
        " under a pinned pytest): the run succeeded over add(2, 3) == -1\n" + outcome.describe()
    )


def test_control_the_pinned_make_test_fails_the_broken_add(hostile: Hostile) -> None:
    repo = hostile.repo(
        "rt132-make-control",
        [
            {
                ".kodo/policy.toml": PINNED,
                "Makefile": "-include Makefile.local\nexport\n\n" + UNITTEST_RULE,
            }
        ],
    )
    fixture = hostile.fixture(
        "rt132-make-control",
        plan=attacks.plan(("calc.py", "modify"), design="add subtracts."),
        patch=attacks.patch(BROKEN),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", outcome.describe()
    assert "FAILED" in outcome.command_output(), outcome.describe()
