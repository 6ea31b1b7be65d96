"""Two plan revisions that name different files are never drawn alike, on the run page's
plan diff, on the CLI card or in ``kodo run plans`` (red-team helper-106; failed while
lookalike names were drawn as they are).

``visible`` escapes controls, format characters and a list of invisible letters and
marks, but leaves every space separator (Unicode Zs) as it is: a no-break space
(U+00A0), an en space (U+2002), a figure space (U+2007), a narrow no-break space
(U+202F) are drawn as a blank, like U+0020; a decomposed ``é`` (``e`` + U+0301) is drawn
like the composed one. Paths may hold them (``unconfined`` refuses only Cc, Cf, Cs, Co,
Cn, Zl, Zp), and a repository may track both ``docs/old notes.md`` and
``docs/old<U+00A0>notes.md``: PlanAgainstBase lets a plan modify or delete either, and
FoldedTwins judges only names a plan brings. A reviewer who asked for the harmless one
to be deleted instead is shown revision 2 deleting "the same" path, with a - and a +
drawn identically on the page, and identical ``file:`` rows in the CLI.

kodo's own rule messages already tell them apart (``shown_name``: ``old\\xa0notes.md``);
the screens the approver decides on must too.
"""

from __future__ import annotations

import unicodedata

import pytest

from services.cli.views import file_lines
from shared.domain.display import visible
from shared.domain.plan_diff import plan_diff

LOOKALIKES = [
    ("docs/old notes.md", "docs/old\u00a0notes.md"),
    ("docs/old notes.md", "docs/old\u2002notes.md"),
    ("docs/old notes.md", "docs/old\u202fnotes.md"),
    ("docs/caf\u00e9.md", "docs/cafe\u0301.md"),
]
IDS = ["no-break-space", "en-space", "narrow-no-break-space", "composed-vs-decomposed"]


def _seen(drawn: str) -> str:
    """What a reader can tell of drawn text: every space separator is a blank, and
    canonically equivalent spellings are one."""
    blanked = "".join(" " if unicodedata.category(c) == "Zs" else c for c in drawn)
    return unicodedata.normalize("NFC", blanked).rstrip()


def _plan(path: str) -> dict[str, object]:
    return {
        "design": "Remove the stale notes.",
        "files": [{"path": path, "change": "delete", "why": "Stale."}],
        "risks": ["None."],
        "tests": ["None."],
    }


@pytest.mark.parametrize(("old", "new"), LOOKALIKES, ids=IDS)
def test_the_run_pages_plan_diff_tells_the_two_paths_apart(old: str, new: str) -> None:
    diff = plan_diff(_plan(old), _plan(new))
    removed = {_seen(visible(d.text)) for d in diff if d.kind == "removed"}
    added = {_seen(visible(d.text)) for d in diff if d.kind == "added"}
    assert removed, diff
    assert added, diff
    assert not removed & added, f"drawn alike on both sides: {sorted(removed & added)}"


@pytest.mark.parametrize(("old", "new"), LOOKALIKES, ids=IDS)
def test_the_cli_file_rows_tell_the_two_paths_apart(old: str, new: str) -> None:
    """``kodo run plans`` lists each revision's files with file_lines (as the card does)."""
    one = [_seen(r) for r in file_lines({"path": old, "change": "delete"}, why=False)]
    two = [_seen(r) for r in file_lines({"path": new, "change": "delete"}, why=False)]
    assert one != two, f"both revisions drawn as {one}"


@pytest.mark.parametrize(("old", "new"), LOOKALIKES, ids=IDS)
def test_the_run_pages_path_cells_tell_the_two_paths_apart(old: str, new: str) -> None:
    """The page's plan table and patch headers draw paths with the ``shown_path`` filter."""
    from services.api.ui import _shown_path

    assert _seen(_shown_path(old)) != _seen(_shown_path(new))
