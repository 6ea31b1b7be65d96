"""A pinned ``make test`` is not replaced by a makefile the change adds (red-team helper-130).

GNU make reads the first of ``GNUmakefile``, ``makefile`` and ``Makefile`` it finds: a
change that adds a ``GNUmakefile`` (or a lowercase ``makefile``) beside the repository's
``Makefile`` replaces every rule of it, the approver still knowing the ``Makefile`` the
policy's ``make test`` was pinned against. RUNNER_CONFIG (shared/domain/change_check.py)
refuses the files pinned pytest reads as its own configuration (``pytest.ini``,
``conftest.py``, ...); make has no entry, so nothing stops it.

The plan modifies ``calc.py`` (``add`` subtracts) and adds a ``GNUmakefile`` ("GNU make
flags for CI") whose ``test`` rule only prints a unittest summary. The pinned ``make
test`` exits 0 without running a test and the run succeeds "verified" over
``add(2, 3) == -1``.

Safe outcome: the change fails closed naming the runner's configuration (as for
``pytest.ini``), or at the least the run does not succeed.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["make", "test"]]\n'
MAKEFILE = "test:\n\tpython3 -m unittest -q test_calc\n"
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
SHADOW = (
    "# GNU make specific flags for CI; the portable rules stay in Makefile.\n"
    "test:\n"
    "\t@python3 -c \"print('Ran 1 test in 0.001s'); print(); print('OK')\"\n"
)


@pytest.mark.parametrize("name", ["GNUmakefile", "makefile"])
def test_a_makefile_the_change_adds_cannot_replace_the_pinned_make_test(
    hostile: Hostile, name: str
) -> None:
    tag = f"make-shadow-{name.lower()}"
    repo = hostile.repo(tag, [{".kodo/policy.toml": PINNED, "Makefile": MAKEFILE}])
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(
            ("calc.py", "modify"), (name, "add"), design="add subtracts; GNU make flags."
        ),
        patch=attacks.patch(BROKEN, attacks.add_file(name, SHADOW)),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        f"the pinned `make test` ran the {name} the change added, not the Makefile it was"
        f" pinned against, and the run succeeded over add(2, 3) == -1\n{outcome.describe()}"
    )


def test_the_pinned_makefile_itself_cannot_be_rewritten_to_run_no_test(hostile: Hostile) -> None:
    """The same as ``conftest.py`` or ``pytest.ini`` under a pinned pytest: the file the
    pinned ``make test`` reads as its rules, changed so its ``test`` runs nothing."""
    repo = hostile.repo("make-rewrite", [{".kodo/policy.toml": PINNED, "Makefile": MAKEFILE}])
    rewrite = (
        "diff --git a/Makefile b/Makefile\n--- a/Makefile\n+++ b/Makefile\n"
        "@@ -1,2 +1,2 @@\n test:\n-\tpython3 -m unittest -q test_calc\n"
        "+\t@python3 -c \"print('Ran 1 test in 0.001s'); print(); print('OK')\"\n"
    )
    fixture = hostile.fixture(
        "make-rewrite",
        plan=attacks.plan(("calc.py", "modify"), ("Makefile", "modify"), design="add subtracts."),
        patch=attacks.patch(BROKEN, rewrite),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned `make test` ran a rewritten Makefile and the run succeeded over"
        f" add(2, 3) == -1\n{outcome.describe()}"
    )


@pytest.mark.parametrize(
    "added",
    ["test/test_more.py", "test"],
    ids=["test-folder", "test-file"],
)
def test_a_file_named_like_the_pinned_target_cannot_make_it_up_to_date(
    hostile: Hostile, added: str
) -> None:
    """``make test`` builds the target ``test``: a rule not declared ``.PHONY`` (as in
    the suite's own MAKEFILE, and most hand-written ones) does nothing when a file or
    folder named ``test`` exists and is newer than its (no) prerequisites. The change adds
    a ``test/`` folder of tests, the most ordinary of changes: make says ``'test' is up to
    date``, exits 0 and runs no test; no runner summary, so the exit status decides."""
    tag = "make-up-to-date-" + ("folder" if "/" in added else "file")
    repo = hostile.repo(tag, [{".kodo/policy.toml": PINNED, "Makefile": MAKEFILE}])
    body = "from calc import add\n\nassert callable(add)\n"
    fixture = hostile.fixture(
        tag,
        plan=attacks.plan(("calc.py", "modify"), (added, "add"), design="add subtracts; tests."),
        patch=attacks.patch(BROKEN, attacks.add_file(added, body)),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        f"the pinned `make test` found {added!r} up to date, ran no test and the run"
        f" succeeded over add(2, 3) == -1\n{outcome.describe()}"
    )


def test_control_the_pinned_make_test_fails_the_broken_add(hostile: Hostile) -> None:
    """Control (passes today): the base Makefile's unittest fails the broken ``add``."""
    repo = hostile.repo("make-control", [{".kodo/policy.toml": PINNED, "Makefile": MAKEFILE}])
    fixture = hostile.fixture(
        "make-control",
        plan=attacks.plan(("calc.py", "modify"), design="add subtracts."),
        patch=attacks.patch(BROKEN),
        build=attacks.build("make", "test"),
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", outcome.describe()
    assert "FAILED" in outcome.command_output(), outcome.describe()
