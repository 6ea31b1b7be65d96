"""The run page's diff between plan revisions tells every changed line apart (red-team
helper-103; failed while the design's lines were laid out bare).

``plan_diff`` quotes every agent value (``_quoted``: backslash and double quote escaped)
so that each line has one way to be written, but lays the design's lines out bare
(``design: {line}``). The page draws each diff line through ``visible`` (the ``shown``
filter), which spells a control character as the very text ``\\x1b``, ``\\t`` or
``\\r``: a design line holding the six characters ``\\x1b`` and one holding an escape
character are drawn alike, and so are two lines that differ only in trailing blanks.
A revision that changes such a line is marked changed (- and +) with both sides
reading the same: the reviewer who asked for changes cannot see what changed.
"""

from __future__ import annotations

import pytest

from shared.domain.display import visible
from shared.domain.plan_diff import plan_diff


def _plan(design: str) -> dict[str, object]:
    return {
        "design": design,
        "files": [{"path": "README.md", "change": "modify", "why": "Fix a typo."}],
        "risks": ["None."],
        "tests": ["Read the README."],
    }


def _drawn(text: str) -> str:
    """What a reader sees of a diff line on the page: ``visible`` (the ``shown`` filter),
    in a ``<pre>`` whose trailing blanks show as nothing."""
    return visible(text).rstrip()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Print the banner \x1b[1m in bold.", "Print the banner \\x1b[1m in bold."),
        ("Indent with\ta tab.", "Indent with\\ta tab."),
        ("Keep the line endings\r as they are.", "Keep the line endings\\r as they are."),
        ("Fix the typo.", "Fix the typo.   "),
    ],
    ids=["escape-vs-its-spelling", "tab-vs-its-spelling", "cr-vs-its-spelling", "trailing-blanks"],
)
def test_a_changed_design_line_is_drawn_differently_on_each_side_of_the_diff(
    old: str, new: str
) -> None:
    """Every line the diff marks removed is drawn (as the page draws it) unlike every line
    it marks added: two revisions that differ are never shown as the same words with a
    - and a + in front (quote the design's lines as every other value is quoted)."""
    diff = plan_diff(_plan(old), _plan(new))
    removed = {_drawn(line.text) for line in diff if line.kind == "removed"}
    added = {_drawn(line.text) for line in diff if line.kind == "added"}
    assert removed, diff
    assert added, diff
    assert not removed & added, f"drawn alike on both sides: {sorted(removed & added)}"
