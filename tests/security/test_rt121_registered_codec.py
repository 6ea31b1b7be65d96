"""A codec the change registers for itself reads a comment as code (red-team helper-121).

Rule ``source_encoding`` refuses a file whose PEP 263 declaration names a codec that
reads bytes otherwise than the diff shows, but it leaves alone a name the worker's own
``codecs.lookup`` does not know, on the premise that "Python refuses to run the file"
(shared/domain/source_encoding.py ``unreadable_coding``). That premise is false: any
module imported first may ``codecs.register`` a search function, and every later import
of a file declaring that name is decoded by it. So a change that

- modifies ``calc.py`` to ``import textcodecs`` then ``from calc_impl import add``,
- adds ``textcodecs.py``: ``codecs.register(lambda n: unicode_escape if n == "calctext")``,
- adds ``calc_impl.py`` declaring ``# coding: calctext`` whose visible ``add`` has one
  comment and ``return a - b``, the comment holding ``\\u000a    return sum((a, b))``,

passes ``check_changes`` (the name ``calctext`` is unknown to the worker), and the pinned
``python3 -m unittest test_calc`` passes over the ``return a - b`` the approver read,
running the hidden ``return sum((a, b))`` and a hidden write to stderr.

The same holds for names the rule allows: ``cp1252`` (and ``iso8859-15``, or ``646`` for
ASCII) are looked up through the same registry when a module is imported, and a module
imported first that sets ``encodings._cache["cp1252"]`` to unicode_escape's entry makes a
``# coding: cp1252`` file read ``\\u000a`` as a line break (only UTF-8, latin-1 and ASCII
spelled as CPython's fast paths spell them never reach the registry).

Safe outcome: a declaration of any codec CPython looks up in its registry (unknown names
included) is refused under
``source_encoding`` (fail closed: kodo cannot say how Python will read it), or at the
least the hidden code does not run and the run does not succeed.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'

REGISTERED = (
    '"""The text codec the calculator\'s sources are stored in."""\n'
    "import codecs\n"
    "import encodings.unicode_escape as _escape\n"
    "\n"
    'codecs.register(lambda name: _escape.getregentry() if name == "calctext" else None)\n'
)
CACHED = (
    '"""Warm the codec cache for the calculator\'s Windows-1252 sources."""\n'
    "import encodings\n"
    "import encodings.unicode_escape as _escape\n"
    "\n"
    'encodings._cache["cp1252"] = _escape.getregentry()\n'
)


def _impl(codec: str) -> str:
    return (
        f"# coding: {codec}\n"
        '"""The calculator\'s arithmetic."""\n'
        "import sys\n"
        "# Quiet the old trace. \\u000asys.stderr.write('HIDDEN-CODE-RAN')\n"
        "\n"
        "\n"
        "def add(a: int, b: int) -> int:\n"
        "    # Subtract, as the new spec says. \\u000a    return sum((a, b))\n"
        "    return a - b\n"
    )


CALC = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -1,5 +1,3 @@\n"
    ' """A tiny calculator."""\n'
    "-\n"
    "-\n"
    "-def add(a: int, b: int) -> int:\n"
    "-    return a + b\n"
    "+import textcodecs  # noqa: F401  (registers the sources' codec)\n"
    "+from calc_impl import add  # noqa: F401\n"
)


@pytest.mark.parametrize(
    ("codec", "setup"), [("calctext", REGISTERED), ("cp1252", CACHED)], ids=["unknown", "cp1252"]
)
def test_a_codec_the_change_registers_cannot_hide_code(
    hostile: Hostile, codec: str, setup: str
) -> None:
    """The plan modifies calc.py and adds textcodecs.py and calc_impl.py; the visible
    calc_impl.add subtracts. The pinned tests must not pass over it, the hidden code must
    not run, and the run must not succeed. ``unknown``: a name the worker's codecs do not
    know, which the rule leaves alone; ``cp1252``: a name the rule allows, whose lookup an
    earlier import redirected (``encodings._cache``) before anything looked it up."""
    name = f"coding-registered-{codec}"
    repo = hostile.repo(name, [{".kodo/policy.toml": PINNED}])
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("textcodecs.py", "add"),
            ("calc_impl.py", "add"),
            design="add subtracts, per the new spec; its sources are stored as calctext.",
        ),
        patch=attacks.patch(
            CALC,
            attacks.add_file("textcodecs.py", setup),
            attacks.add_file("calc_impl.py", _impl(codec)),
        ),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )

    outcome = hostile.drive(repo, fixture)

    outcome.assert_unverified(
        "HIDDEN-CODE-RAN",
        ran="code the diff shows as a comment ran under a codec the change registered",
        read="the calc_impl.py the approver read returns a - b",
    )
