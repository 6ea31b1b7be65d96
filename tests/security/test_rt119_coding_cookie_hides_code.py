"""A coding cookie cannot make Python run code the diff shows as a comment (red-team
helper-119).

The plan says ``add check.py``. The file the agent writes is plain, printable ASCII:

    # -*- coding: unicode_escape -*-
    print('visible check')
    # harmless note \\x0aprint("RAN-" + "HIDDEN")

git, the run page and ``kodo run diff`` all show line 3 as one comment line (the page
colours it as a comment, ``<span class="tok-c">``; there is no control character, so
``visible()`` has nothing to escape). Python honours the PEP 263 cookie and decodes the
file with ``unicode_escape``, where the four characters ``\\x0a`` are a line feed:
``print("RAN-HIDDEN")`` is a statement of its own, and the verification runs it
(``raw_unicode_escape`` with ``\\u000a`` likewise). Today the run **succeeds** and its
output holds ``RAN-HIDDEN``: the approver's view of the change is not the code that
ran, the same family as the bidi "Trojan Source" text kodo escapes and the ``ident``
attribute it refuses. Nothing in ApplyPatchST or the page looks at a source file's
declared encoding. (``utf-7`` with ``+AAo-`` does the same on the host's python3, but
the sandbox's answered ``SyntaxError: encoding problem: utf-7``: held there.)

Safe outcome: kodo fails closed on a changed file whose coding cookie names an
encoding in which the bytes shown are not the text Python reads (anything but
utf-8/ascii/latin-1 family, or at least the escape codecs and UTF-7), with a
diagnostic naming the rule; the hidden statement never runs.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

HIDDEN = {
    "unicode_escape": '# harmless note \\x0aprint("RAN-" + "HIDDEN")',
    "raw_unicode_escape": '# harmless note \\u000aprint("RAN-" + "HIDDEN")',
}


@pytest.mark.parametrize("encoding", sorted(HIDDEN))
def test_a_coding_cookie_cannot_run_a_line_the_diff_shows_as_a_comment(
    hostile: Hostile, encoding: str
) -> None:
    source = f"# -*- coding: {encoding} -*-\nprint('visible check')\n{HIDDEN[encoding]}\n"
    name = f"rt119-{encoding.replace('_', '-')}"
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(("check.py", "add")),
        patch=attacks.patch(attacks.add_file("check.py", source)),
        build=attacks.build("python3", "check.py"),
    )
    outcome = hostile.drive(hostile.repo(name), fixture)
    run_id = str(outcome.run["runId"])
    with hostile.signed_in() as browser:
        page = browser.get(f"/ui/runs/{run_id}").text
    as_comment = '<span class="tok-c"># harmless note \\' in page

    assert "RAN-HIDDEN" not in outcome.command_output(), (
        f"the page showed the statement inside a comment ({as_comment}), and Python ran it:"
        f" {outcome.status}, output {outcome.command_output()!r}"
    )
    assert outcome.status == "failed", outcome.describe()
