"""A pinned ``python3 -m unittest`` runs the standard library's modules, not one a patch
makes importable out of a base folder that held no Python (rule verify_pinned;
red-team helper-107).

CompileST refuses a plan adding a top-level module named like the standard library's
"unless the base tree holds it" (the repository's own package). But "holds it" is any
path under a top-level folder of that name: a Django-style ``locale/`` of translations
(``locale/fr/LC_MESSAGES/*.po``) is no module at all (a folder without ``__init__.py`` at
``sys.path[0]`` is only a namespace portion, which the standard library's ``locale``
outranks). A plan adding ``locale/__init__.py`` makes it a regular package found first:
``python3 -m unittest`` imports ``argparse`` -> ``gettext`` -> ``locale`` after the
worktree is on ``sys.path``, so the patch's code prints the runner's OK over a broken
``add``.
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


def test_a_patch_cannot_turn_a_base_data_folder_into_a_stdlib_shadow(hostile: Hostile) -> None:
    """Rule verify_pinned: a base tree's top-level ``locale/`` of translation files (no
    module) does not let a plan add ``locale/__init__.py``, which the pinned runner
    then imports in place of the standard library's ``locale``; a broken ``add`` never
    makes the run succeed (or the plan fails closed naming verify_pinned)."""
    fixture = hostile.fixture(
        "pinned-locale-shadow",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("locale/__init__.py", "add"),
            design="Tidy add; make the translations a package.",
        ),
        patch=attacks.patch(BROKEN, attacks.add_file("locale/__init__.py", FAKE_OK)),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo(
        "pinned-locale-shadow",
        [
            {
                ".kodo/policy.toml": PINNED,
                "locale/fr/LC_MESSAGES/messages.po": 'msgid "Hello"\nmsgstr "Bonjour"\n',
            }
        ],
    )

    outcome = hostile.drive(repo, fixture)

    assert outcome.status != "succeeded", (
        "the pinned 'python3 -m unittest' imported the patch's locale/__init__.py (the"
        " base's locale/ held only translations), which printed the runner's OK, and the"
        f" run succeeded with add(2, 3) == -1\n{outcome.describe()}"
    )
    assert_fails_closed(outcome, "verify_pinned")
