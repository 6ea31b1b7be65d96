"""The CLI plan card on a terminal that draws East Asian Ambiguous characters two cells
wide (red-team helper-103; failed on the code that counted them one).

``views._cells`` says it gives "the terminal cells ``char`` may take, erring wide", and
``CARD_WIDTH`` promises that every row a terminal at least 80 columns wide draws starts
with kodo's label or the continuation mark under it. Characters below U+1100 are
counted by rich's ``cell_len`` alone, which gives East Asian Ambiguous characters
(UAX #11 class A: e-acute, a-grave, u-diaeresis, the multiplication and section
signs, Greek, Cyrillic...) one cell. Terminals in an East Asian setup draw them two
cells wide: xterm ``-cjk_width``, VTE/GNOME Terminal's "ambiguous-width: wide",
iTerm2's "ambiguous characters are double-width", mintty's and PuTTY's CJK settings.
On such a terminal a risk of 34 ``é`` is one card row to kodo and 79 cells on screen:
the terminal wraps it, and the next row starts with text the agent wrote (``file:
delete calc.py``).
"""

from __future__ import annotations

import unicodedata

import pytest

from services.cli.views import plan_card_lines, question_rows

COLUMNS = 80
FORGED = "file: delete calc.py"


def _cells_on_an_ambiguous_wide_terminal(char: str) -> int:
    """What a terminal set to draw ambiguous-width characters wide gives ``char``."""
    if unicodedata.category(char) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("A", "W", "F") else 1


def _terminal_rows(text: str, columns: int = COLUMNS) -> list[str]:
    """The rows such a terminal draws ``text`` as (a full row wraps, never cuts)."""
    rows: list[str] = []
    for line in text.split("\n"):
        row, used = "", 0
        for char in line:
            cells = _cells_on_an_ambiguous_wide_terminal(char)
            if used + cells > columns:
                rows.append(row)
                row, used = "", 0
            row, used = row + char, used + cells
        rows.append(row)
    return rows


# "  risk:   " (10 cells) + "x" + 34 x "é" (68 cells drawn, 34 counted) = 79 cells; the
# separating space fills the row, so the forged text starts the terminal's next row.
@pytest.mark.parametrize(
    "pad",
    ["\u00e9" * 34, "\u0436" * 34, "\u00d7" * 34, "\u03b1" * 34],
    ids=["latin-e-acute", "cyrillic-zhe", "multiplication-sign", "greek-alpha"],
)
def test_no_row_of_the_plan_card_starts_with_agent_text_where_ambiguous_characters_are_wide(
    pad: str,
) -> None:
    """Every row an 80-column terminal draws of the plan card starts with kodo's label or
    the continuation mark under it, however the terminal sizes East Asian Ambiguous
    characters (fold them as two cells: erring wide only folds a row early)."""
    card = {
        "planSha256": "0" * 64,
        "plan": {
            "design": "Fix a typo in the README.",
            "files": [{"path": "README.md", "change": "modify", "why": "Fix a typo."}],
            "risks": ["x" + pad + " " + FORGED],
            "tests": ["Read the README."],
        },
    }
    rows = _terminal_rows("\n".join(plan_card_lines(card)))
    forged = [r for r in rows if r.startswith(FORGED)]
    assert not forged, "a terminal row starts with the agent's text:\n" + "\n".join(rows)
    file_rows = [r.strip() for r in rows if r.lstrip().startswith("file:")]
    assert file_rows == ["file:   modify README.md"], file_rows


def test_no_row_of_a_question_starts_with_agent_text_where_ambiguous_chars_are_wide() -> None:
    """The same for DecideST's question as ``kodo run status`` and ``kodo run answer``
    draw it: no terminal row begins with words of the agent's choosing."""
    forged = "answer it: kodo run answer RUN --question-sha256 " + "f" * 64 + " -m yes"
    rows = _terminal_rows("\n".join(question_rows("x" + "\u00e9" * 34 + " " + forged)))
    assert all(r.startswith(("question: ", "        | ")) for r in rows), "\n".join(rows)
