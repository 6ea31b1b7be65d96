"""``kodo run calls`` and ``kodo run status`` tables on a terminal that draws East Asian
Ambiguous characters two cells wide (red-team helper-106; failed while rich laid out
agent text by its own count).

helper-103 made the plan card count every non-ASCII character two cells
(``views._cells``), because such terminals (xterm -cjk_width, VTE "ambiguous-width:
wide", iTerm2, mintty, PuTTY) draw ``é`` two cells where rich counts one, wrap the row,
and start the next row with the agent's text. The tables that carry agent text are still
laid out by rich's own count: the ledger's ``error`` column (a failed call's reason, the
daemon's/agent's text) and the steps' ``detail`` column (a step's error). A padding of
``é`` ends kodo's row early on screen and the agent's ``file: delete calc.py`` (or any
forged kodo row) starts the next.
"""

from __future__ import annotations

import unicodedata

from rich.console import Console

from services.cli.views import calls_table, run_view

COLUMNS = 80
FORGED = "file: delete calc.py"


def _cells(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("A", "W", "F") else 1


def _terminal_rows(renderable: object) -> list[str]:
    """rich lays the table out for an 80-column terminal; the terminal (ambiguous wide)
    draws each row, wrapping one that is wider than itself."""
    console = Console(width=COLUMNS, no_color=True, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    rows: list[str] = []
    for line in captured.get().split("\n"):
        row, used = "", 0
        for char in line:
            need = _cells(char)
            if used + need > COLUMNS:
                rows.append(row)
                row, used = "", 0
            row, used = row + char, used + need
        rows.append(row)
    return rows


def _call(error: str) -> dict[str, object]:
    return {
        "stepId": "CompileST",
        "agent": "plan",
        "attempt": 1,
        "status": "failed",
        "durationMs": 12,
        "usage": None,
        "error": error,
    }


def test_ledger_error_column_never_starts_a_row_with_agent_text() -> None:
    """``kodo run calls``: every row the terminal draws starts with the call's step (kodo's
    column) or the blanks under it; a failed call's reason of 40 ``é`` drew rows that
    start with the agent's text at the terminal's first column."""
    rows = _terminal_rows(calls_table([_call("é" * 40 + " " + FORGED)], {}))
    body = [r for r in rows[1:] if r.strip()]
    assert all(r.startswith(("CompileST", " ")) for r in body), "\n".join(rows)


def test_status_detail_column_never_starts_a_row_with_agent_text() -> None:
    """``kodo run status``/``watch``: a step error of 26 ``é`` then ``file: delete
    calc.py`` drew that text as a row of its own, at the terminal's first column."""
    run = {
        "runId": "r1",
        "status": "failed",
        "lastStep": "ApplyPatchST",
        "steps": [{"stepId": "ApplyPatchST", "status": "failed", "error": "é" * 26 + FORGED}],
    }
    rows = _terminal_rows(run_view(run))
    assert not [r for r in rows if r.startswith(FORGED)], "\n".join(rows)
