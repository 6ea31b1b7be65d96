"""A pinned verification runs the Python the approver read, not text a ``# coding:``
declaration decodes into something else (red-team helper-120).

Python decodes a source file with the codec its first two lines name (PEP 263) before
it tokenizes it. Several codecs Python accepts there turn bytes the diff shows as a
comment into code: under ``# coding: unicode_escape`` (or ``raw_unicode_escape``) the six
characters ``\\u000a`` are a newline, under ``# coding: utf-7`` ``+AAo-`` is. So

    # coding: unicode_escape
    def add(a: int, b: int) -> int:
        # Subtract, as the new spec says. \\u000a    return sum((a, b))
        return a - b

reads, in the plan's diff and on the approver's screen, as an ``add`` that subtracts
(one comment, one ``return a - b``), while Python runs ``return sum((a, b))``: the
pinned ``python3 -m unittest test_calc`` passes, the run succeeds, and "the repository's
own tests passed on the change" is said of a change whose visible source fails them. The
same line hides any code (an ``import os; os.system(...)`` in a "comment") from the
approver in what is delivered.

Safe outcome: a patch whose Python source declares a codec that does not read its bytes
as the diff shows them (anything but UTF-8 / ASCII-compatible single-byte text) fails
closed naming the rule, or at the least the pinned verification does not pass over the
visible ``return a - b``.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'


def _hidden(codec: str, newline: str) -> str:
    return (
        "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
        "@@ -1,5 +1,9 @@\n"
        f"+# coding: {codec}\n"
        ' """A tiny calculator."""\n'
        "+import sys\n"
        f"+# Quiet the old trace.{newline}sys.stderr.write('HIDDEN-CODE-RAN')\n"
        " \n"
        " \n"
        " def add(a: int, b: int) -> int:\n"
        "-    return a + b\n"
        f"+    # Subtract, as the new spec says.{newline}    return sum((a, b))\n"
        "+    return a - b\n"
    )


@pytest.mark.parametrize(
    ("codec", "newline"),
    [("unicode_escape", " \\u000a"), ("raw_unicode_escape", " \\u000a"), ("utf-7", "+AAo-")],
)
def test_a_coding_declaration_cannot_hide_code_from_the_approver(
    hostile: Hostile, codec: str, newline: str
) -> None:
    """The plan modifies ``calc.py``; the diff's visible Python makes ``add`` subtract.
    The pinned tests must not pass on it (the hidden ``return sum((a, b))`` must not be
    what they ran), and the run must not succeed."""
    name = f"coding-{codec.replace('_', '-')}"
    repo = hostile.repo(name, [{".kodo/policy.toml": PINNED}])
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(("calc.py", "modify"), design="add subtracts, per the new spec."),
        patch=attacks.patch(_hidden(codec, newline)),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )

    outcome = hostile.drive(repo, fixture)

    outcome.assert_unverified(
        "HIDDEN-CODE-RAN",
        ran=f"code the diff shows as a comment ran under '# coding: {codec}'",
        read="the calc.py the approver read returns a - b",
    )
