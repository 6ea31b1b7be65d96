"""A repository's .gitattributes cannot make the judged commit differ from what runs.

``git add`` passes each file through the attributes (``ident`` collapses ``$Id: ...$``;
``binary`` hides a file's lines from numstat), and git 2.39 cannot be told to ignore
them. A hostile plan adds its own ``.gitattributes`` beside the files it changes:

* ``*.py ident`` with ``x = "$Id: "; print(...) #$"``: the blob and ``patch.diff`` hold
  ``$Id$`` while Python on disk runs the hidden statement. ApplyPatchST hashes every
  changed file as it is on disk and refuses one that is not the staged blob
  (``worktree_filter``);
* ``big.py binary`` on a 5,000-line script: numstat said ``-`` and ``max_lines`` counted
  nothing. Lines are now counted with ``--text``.

(Found by a red-team pass.)
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security


@pytest.mark.parametrize(
    "line",
    ['x = "$Id: "; print("RAN-" + "HIDDEN") #$"', "# $Id: \rprint('RAN-' + 'HIDDEN') #$"],
    ids=["no-cr", "lone-cr"],
)
def test_an_ident_attribute_cannot_hide_code_from_the_judged_commit(
    hostile: Hostile, line: str
) -> None:
    name = f"ident-{'cr' if chr(13) in line else 'plain'}"
    diff = attacks.add_file(".gitattributes", "*.py ident\n") + (
        "diff --git a/check.py b/check.py\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/check.py\n@@ -0,0 +1,2 @@\n+print('visible check')\n+{line}\n"
    )
    fixture = hostile.fixture(
        name,
        plan=attacks.plan((".gitattributes", "add"), ("check.py", "add")),
        patch=attacks.patch(diff),
        build=attacks.build("python3", "check.py"),
    )

    outcome = hostile.drive(hostile.repo(name), fixture)

    assert_fails_closed(outcome, "worktree_filter")
    assert "HIDDEN" not in outcome.command_output(), "nothing ran"
    assert "check.py" in str(outcome.diagnostic())


def test_a_binary_attribute_cannot_hide_a_files_lines_from_max_lines(hostile: Hostile) -> None:
    body = "".join(f"x{i} = {i}\n" for i in range(5000)) + "print('RAN-' + 'UNCOUNTED')\n"
    fixture = hostile.fixture(
        "binary-lines",
        plan=attacks.plan((".gitattributes", "add"), ("big.py", "add")),
        patch=attacks.patch(
            attacks.add_file(".gitattributes", "big.py binary\n"),
            attacks.add_file("big.py", body),
        ),
        build=attacks.build("python3", "big.py"),
    )

    outcome = hostile.drive(hostile.repo("binary-lines"), fixture)

    assert_fails_closed(outcome, "max_lines")
    assert "UNCOUNTED" not in outcome.command_output()


def test_a_diff_attribute_cannot_hide_a_files_change_from_the_reviewer(hostile: Hostile) -> None:
    """``*.py -diff`` beside a new script: patch.diff (what the review page and
    ``kodo run diff`` show) still shows the script's lines, not a base85 binary patch."""
    fixture = hostile.fixture(
        "hidden-diff",
        plan=attacks.plan((".gitattributes", "add"), ("check.py", "add")),
        patch=attacks.patch(
            attacks.add_file(".gitattributes", "*.py -diff\n"),
            attacks.add_file("check.py", "print('visible check')\nprint('RAN-' + 'SHOWN')\n"),
        ),
        build=attacks.build("python3", "check.py"),
    )

    outcome = hostile.drive(hostile.repo("hidden-diff"), fixture)

    patch = outcome.artifact("patch.diff") or b""
    assert b"+print('RAN-' + 'SHOWN')\n" in patch, patch[:2000]
    assert b"GIT binary patch" not in patch
    assert outcome.status == "succeeded", outcome.describe()


def test_a_decoy_git_would_hash_in_a_quoted_names_place_does_not_hide_code(
    hostile: Hostile,
) -> None:
    """``git hash-object --stdin-paths`` read ``"q"/check.py`` as the file ``q``: a decoy
    ``q`` holding the staged bytes (``$Id$``) made the file on disk, whose ``$Id: ...$``
    hides a statement, pass as faithful, and the run succeeded on a worktree that was not
    its commit (a red-team pass). Each file is hashed as itself."""
    hidden = 'x = "$Id: "; print("RAN-" + "DECOYED") #$"'
    diff = (
        attacks.add_file(".gitattributes", "*.py ident\n")
        + attacks.add_file('"q"/check.py', f"print('visible check')\n{hidden}\n")
        + attacks.add_file("q", "print('visible check')\nx = \"$Id$\"\n")  # the staged bytes
    )
    fixture = hostile.fixture(
        "ident-decoy",
        plan=attacks.plan((".gitattributes", "add"), ('"q"/check.py', "add"), ("q", "add")),
        patch=attacks.patch(diff),
        build=attacks.build("python3", '"q"/check.py'),
    )

    outcome = hostile.drive(hostile.repo("ident-decoy"), fixture)

    assert_fails_closed(outcome, "worktree_filter")
    assert "DECOYED" not in outcome.command_output(), "nothing ran"


def test_a_file_unlike_its_staged_blob_is_refused_before_any_other_judgement(
    hostile: Hostile,
) -> None:
    """What git staged for a path is not what the disk holds there (a conversion, or a
    folder swapped for a link while git read it, from anywhere the link leads): it is
    refused as unfaithful before the plan and the policy judge the change, and the
    record keeps nothing read from that blob (its line count), whatever else it breaks
    (here the plan, which never named ``check.py``)."""
    hidden = 'x = "$Id: "; print("RAN-" + "UNPLANNED") #$"'
    fixture = hostile.fixture(
        "ident-unplanned",
        plan=attacks.plan((".gitattributes", "add")),
        patch=attacks.patch(
            attacks.add_file(".gitattributes", "*.py ident\n"),
            attacks.add_file("check.py", f"print('visible check')\n{hidden}\n"),
        ),
        build=attacks.build("python3", "check.py"),
    )

    outcome = hostile.drive(hostile.repo("ident-unplanned"), fixture)

    assert_fails_closed(outcome, "worktree_filter")
    recorded = {c["path"]: c for c in outcome.diagnostic()["changes"]}
    assert recorded["check.py"]["added"] is None, recorded
    assert recorded[".gitattributes"]["added"] == 1, "a faithful file keeps its count"
    assert "UNPLANNED" not in outcome.command_output(), "nothing ran"
