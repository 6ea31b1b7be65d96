"""A base tree's data folder named like the pinned runner does not let a plan make it the
runner (rule verify_pinned; red-team helper-113).

CompileST lets a plan add names under a top-level folder named like a *pinned* module
whenever the base tree has any path there ("the repository's own package": a pinned
``python3 -m calcpkg.check``). Helper-107 narrowed this for the standard library's
names (only ``M.py`` / ``M/__init__.py`` count), but not for the pinned module itself.
A repository with a top-level ``unittest/`` folder that is no Python package (C unit
tests, fixtures: only a namespace portion, which the standard library's ``unittest``
outranks) lets a plan add ``unittest/__init__.py`` and ``unittest/__main__.py``: now a
regular package first on ``sys.path``, so the pinned ``python3 -m unittest -q test_calc``
runs the patch's ``__main__``, which prints the runner's OK over a broken ``add``.
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
FAKE_OK = (
    "import sys\n"
    "sys.stderr.write('FAKE-RUNNER\\n.\\n----------------------------------------------------------------------\\n')\n"
    "sys.stderr.write('Ran 1 test in 0.000s\\n\\nOK\\n')\n"
    "sys.exit(0)\n"
)


def test_a_data_folder_named_like_the_pinned_runner_cannot_become_it(hostile: Hostile) -> None:
    """Rule verify_pinned: the base's ``unittest/`` holds C sources, no Python; a plan
    adding ``unittest/__init__.py`` and ``unittest/__main__.py`` fails closed before
    approval (or the pinned command still runs the standard library's unittest)."""
    fixture = hostile.fixture(
        "pinned-runner-data-folder",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("unittest/__init__.py", "add"),
            ("unittest/__main__.py", "add"),
            design="Tidy add; a driver for the C unit tests.",
        ),
        patch=attacks.patch(
            BROKEN,
            attacks.add_file("unittest/__init__.py", '"""C unit test driver."""\n'),
            attacks.add_file("unittest/__main__.py", FAKE_OK),
        ),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo(
        "pinned-runner-data-folder",
        [
            {
                ".kodo/policy.toml": PINNED,
                "unittest/test_add.c": "int main(void) { return 0; }\n",
            }
        ],
    )

    outcome = hostile.drive(repo, fixture)

    assert "FAKE-RUNNER" not in outcome.command_output(), (
        "the pinned 'python3 -m unittest' ran the patch's unittest/__main__.py"
        f"\n{outcome.describe()}"
    )
    assert outcome.status != "succeeded", outcome.describe()
    assert_fails_closed(outcome, "verify_pinned")
