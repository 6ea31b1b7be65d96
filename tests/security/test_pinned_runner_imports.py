"""A pinned ``python3 -m unittest`` runs the toolchain's runner, not a module the patch
put in front of one the runner imports (rule verify_pinned; red-team helper-105).

CompileST (runner_shadows) refuses a plan adding a top-level ``unittest.py`` or
``unittest/`` under a pinned ``python3 -m unittest``, because the worktree is first on
``sys.path``. But the runner itself imports more of the standard library once the
worktree is on ``sys.path``: ``unittest.case`` imports ``difflib`` and ``pprint``,
``unittest.main`` imports ``argparse``; none is loaded at interpreter start-up. A patch
adding a top-level ``difflib.py`` is imported by the pinned runner before any test, so
the patch's program prints the runner's "OK" and exits 0 while ``add`` is broken: the
pinned argv matched argument for argument verified nothing.
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
    "sys.stderr.write('.\\n----------------------------------------------------------------------\\n')\n"
    "sys.stderr.write('Ran 1 test in 0.000s\\n\\nOK\\n')\n"
    "sys.exit(0)\n"
)


def test_a_patch_cannot_replace_a_module_the_pinned_runner_imports(hostile: Hostile) -> None:
    """Rule verify_pinned: under a pinned ``python3 -m unittest`` no module the patch adds
    at the top of the worktree is imported by the runner in place of the standard
    library's (``difflib``, ``pprint``, ``argparse``...); a broken ``add`` never makes
    the run succeed (or the plan fails closed naming verify_pinned)."""
    fixture = hostile.fixture(
        "pinned-import-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"), ("difflib.py", "add"), design="Tidy add; a diff helper."
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("difflib.py", FAKE_OK)),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("pinned-import-shadow", [{".kodo/policy.toml": PINNED}])

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest' imported the patch's difflib.py, which printed"
        f" the runner's OK, and the run succeeded with add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "verify_pinned")


def test_a_symlink_named_like_the_pinned_module_cannot_replace_the_runner(
    hostile: Hostile,
) -> None:
    """Rule verify_pinned: under a pinned ``python3 -m unittest`` (and a policy that
    allows symlinks inside the worktree), a top-level symlink ``unittest`` to a folder
    of the patch's is the package ``python -m unittest`` imports; runner_shadows counts
    only ``unittest.py``-like names and ``unittest/...`` paths, so the plan is approved
    and the patch's ``__main__`` prints the runner's OK while ``add`` is broken."""
    pinned = (
        "[policy]\nallow_symlinks = true\n"
        'verify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
    )
    link = (
        "diff --git a/unittest b/unittest\nnew file mode 120000\n--- /dev/null\n+++ b/unittest\n"
        "@@ -0,0 +1 @@\n+helpers\n\\ No newline at end of file\n"
    )
    fixture = hostile.fixture(
        "pinned-symlink-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("helpers/__init__.py", "add"),
            ("helpers/__main__.py", "add"),
            ("unittest", "add"),
            design="Tidy add; test helpers.",
        ),
        patch=attacks.patch(
            BROKEN,
            attacks.add_file("helpers/__init__.py", "X = 1\n"),
            attacks.add_file("helpers/__main__.py", FAKE_OK),
            link,
        ),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("pinned-symlink-shadow", [{".kodo/policy.toml": pinned}])

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest' imported the patch's 'unittest' symlink to"
        f" helpers/ and the run succeeded with add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "verify_pinned")
