"""``kodo run show`` draws the agent's verification command folded like the plan card
(red-team helper-103; failed on the unfolded rows).

The plan card and ``kodo run show``'s plan lines fold every agent value under a label
(``views.labelled``) so that no row a terminal at least 80 columns wide draws starts
with text the agent wrote. ``kodo run show``'s ``verify:`` row (DecideST's argv,
joined) and its ``error:`` row (which quotes that argv: ``verification exited 1: ...``)
are printed as one unfolded line: an argv padded to the end of the row draws the
agent's own ``  exit:     0`` row over a verification that exited 1.
"""

from __future__ import annotations

import unicodedata

from rich.console import Console

from services.cli.review_views import RunStory, show_view

COLUMNS = 80
SHOWN = "import sys; sys.exit(1)"
# "verify:     python3 -c " (23) + SHOWN (23) = 46 cells; padded to 80, then the forgery.
FORGED_ROW = "  exit:     0"
ARGV = ["python3", "-c", SHOWN + " " * (COLUMNS - 46) + FORGED_ROW]


def _terminal_rows(text: str, columns: int = COLUMNS) -> list[str]:
    rows: list[str] = []
    for line in text.split("\n"):
        row, used = "", 0
        for char in line:
            cells = 0 if unicodedata.combining(char) else 1  # (ASCII here)
            if used + cells > columns:
                rows.append(row)
                row, used = "", 0
            row, used = row + char, used + cells
        rows.append(row)
    return rows


def _piped(story: RunStory) -> str:
    """What ``kodo run show`` writes to a pipe (services/cli/terminal.py's console)."""
    console = Console(width=100_000, no_color=True, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(show_view(story))
    return "".join(f"{line.rstrip()}\n" for line in captured.get().splitlines())


def test_no_row_of_kodo_run_show_is_an_exit_row_the_agent_wrote() -> None:
    """A verification that exited 1 is shown with one exit row, ``exit: 1``: no row an
    80-column terminal draws of ``kodo run show`` starts with the agent's argv (fold the
    verify and error rows under their labels, as the plan lines are)."""
    story = RunStory(
        run={
            "runId": "r1",
            "status": "failed",
            "error": "verification exited 1: " + " ".join(ARGV),
            "steps": [{"stepId": "ExecuteST", "status": "failed"}],
        },
        intent={"goal": "Fix a typo", "submittedBy": "sam", "repo": "/r", "baseRef": "main"},
        revisions={"revisions": []},
        calls=[],
        artifacts=[],
        decision={"next_action": "verify", "argv": ARGV, "reason": "Run it."},
        diagnostic={"exit_code": 1, "timed_out": False},
    )
    rows = _terminal_rows(_piped(story))
    exits = [r.strip() for r in rows if r.strip().startswith("exit:")]
    assert exits == ["exit:     1"], "\n".join(rows)
