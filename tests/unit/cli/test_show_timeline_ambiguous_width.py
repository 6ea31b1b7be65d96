"""``kodo run show``'s step timeline on a terminal that draws East Asian Ambiguous
characters two cells wide (red-team helper-109; fails on the code it was written against).

helper-106 found that a step's error (agent-quoted: a refused plan's path, a verification
argument) in ``kodo run status``'s table was padded by rich's one-cell count of ``é``
and wrapped by such a terminal onto a row of the agent's own, and fixed it there:
``views.ascii_cell`` draws the detail in ASCII (``\\xe9``). ``kodo run show`` draws the
same step error in its timeline's ``detail`` column with ``views.cell``
(services/cli/review_views.py ``timeline_table``), so the hole is open in the view that
"puts everything on one screen": on a 120-column terminal (xterm ``-cjk_width``, VTE
"ambiguous-width: wide", iTerm2, mintty, PuTTY CJK) the agent's text starts terminal
rows at 80 columns, and at 160 or 200 a whole forged ``ExecuteST  succeeded  1  1
12 ms ...`` row is drawn at the left edge between CompileST's row and the approval's.
"""

from __future__ import annotations

import unicodedata

import pytest
from rich.console import Console

from services.cli.review_views import timeline_table

FORGED = "ExecuteST     succeeded      1           1    12 ms      0       0  $0.0000"
STEPS = ("step", "CompileST", "approval", "ApplyPatchST", "ApplyPat", "DecideST", "ExecuteST")


def _cells(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("A", "W", "F") else 1


def _terminal_rows(text: str, columns: int) -> list[str]:
    """The rows such a terminal draws ``text`` as (a full row wraps, never cuts)."""
    rows: list[str] = []
    for line in text.split("\n"):
        row, used = "", 0
        for char in line:
            if used + _cells(char) > columns:
                rows.append(row)
                row, used = "", 0
            row, used = row + char, used + _cells(char)
        rows.append(row)
    return rows


def _drawn(run: dict[str, object], columns: int) -> list[str]:
    console = Console(width=columns, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(timeline_table(run, []))
    return _terminal_rows(captured.get(), columns)


@pytest.mark.parametrize("columns", [80, 160, 200])
def test_no_row_of_kodo_run_show_s_timeline_starts_with_a_step_error_s_text(
    columns: int,
) -> None:
    """Every terminal row of the timeline starts with kodo's own text (a step's name or the
    header) or with the blank indent of a folded cell, never with the agent's."""
    offenders: dict[int, list[str]] = {}
    for pad in range(1, 90):
        error = "confinement: " + "\u00e9" * pad + " " + FORGED
        run = {
            "status": "failed",
            "steps": [
                {"stepId": "CompileST", "status": "failed", "durationMs": 51, "error": error}
            ],
        }
        rows = _drawn(run, columns)
        bad = [
            r
            for r in rows
            if (r.strip() and not r.startswith((" ", *STEPS))) or r.startswith(FORGED[:20])
        ]
        if bad:
            offenders[pad] = rows
    forged = [rows for rows in offenders.values() if any(r.startswith(FORGED[:20]) for r in rows)]
    example = (forged or list(offenders.values()) or [[]])[0]
    assert not offenders, (
        f"{len(offenders)} paddings draw rows of the agent's own"
        f" ({len(forged)} a whole forged step row); e.g.:\n" + "\n".join(example)
    )
