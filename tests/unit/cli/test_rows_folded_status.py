"""No row a terminal draws of ``kodo run status`` / ``kodo run watch`` / ``kodo run show``
starts with text the agent wrote (red-team helper-106; failed on the unfolded rows).

helper-103 folded ``kodo run show``'s verify and error rows under their labels
(``views.labelled``). Two rows still go out whole with agent text in them:

* ``run_view`` (``kodo run status`` and the live ``kodo run watch``) prints
  ``error: <the run's error>`` as one rich Text. The run's error quotes agent text
  (``no plan after 3 attempts: the last was rejected (plan_base: <the plan's path>
  ...)``; a provider failure's text; ``verification exited 1: <argv>``). rich wraps it
  at the terminal's width, so the second row starts with what the agent wrote.
* ``kodo run show``'s diffstat rows (`` <path> | +1 -0``) print the patch's paths
  (agent-chosen, up to 500 characters, spaces allowed) unfolded: a path padded to the
  end of the row draws a row of the agent's own.
"""

from __future__ import annotations

from rich.console import Console

from services.cli.review_views import RunStory, show_view
from services.cli.views import run_view

COLUMNS = 80
FORGED = "exit:     0"


def _on_terminal(renderable: object, columns: int = COLUMNS) -> list[str]:
    """What ``kodo run status`` draws on a terminal ``columns`` wide (terminal.console:
    a tty gets rich at the terminal's width)."""
    console = Console(width=columns, no_color=True, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().splitlines()


def _piped_then_wrapped(renderable: object, columns: int = COLUMNS) -> list[str]:
    """``kodo run show`` piped into ``less``/a pager, or drawn by a terminal that wraps
    a row longer than itself (ASCII here: one cell a character)."""
    console = Console(width=100_000, no_color=True, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    rows: list[str] = []
    for line in captured.get().splitlines():
        line = line.rstrip()
        while len(line) > columns:
            rows.append(line[:columns])
            line = line[columns:]
        rows.append(line)
    return rows


def test_status_error_row_is_folded_under_its_label() -> None:
    """Every row ``kodo run status`` draws for the run's error starts with ``error:`` or
    the continuation under it, never with the agent's path (fold it with
    views.labelled, as ``kodo run show`` does since helper-103)."""
    path = "calc.py" + " " * 30 + FORGED  # a plan entry's path: spaces are allowed
    run = {
        "runId": "r1",
        "status": "failed",
        "lastStep": "CompileST",
        "nextAction": "none",
        "retryCount": 0,
        "error": "no valid plan after 3 attempts: the last was rejected (plan_base: the"
        f" plan's files disagree with the base tree: {path} is not a file of the base"
        " tree (modify, delete and a rename's from name files the base tree has; ...))",
        "steps": [{"stepId": "CompileST", "status": "failed"}],
    }
    rows = _on_terminal(run_view(run))
    forged = [r for r in rows if r.strip().startswith(FORGED)]
    assert forged == [], "\n".join(rows)
    at = next(i for i, r in enumerate(rows) if r.startswith("error:"))
    tail = [r for r in rows[at + 1 :] if r.strip()]
    assert all(not r[:1].isalnum() for r in tail), "\n".join(rows)


def test_show_diffstat_rows_never_start_with_the_agents_path() -> None:
    """A verification that exited 1 is shown with one exit row: the diffstat row of a
    path padded with blanks does not draw the agent's ``exit:     0`` row."""
    path = "calc.py" + " " * (COLUMNS - len(" calc.py")) + FORGED
    patch = (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    )
    story = RunStory(
        run={
            "runId": "r1",
            "status": "failed",
            "error": "verification exited 1: python3 -m pytest",
            "steps": [{"stepId": "ExecuteST", "status": "failed"}],
        },
        intent={"goal": "Fix a typo", "submittedBy": "sam", "repo": "/r", "baseRef": "main"},
        revisions={"revisions": []},
        calls=[],
        artifacts=[],
        patches=[("patch.diff", patch)],
        decision={"next_action": "verify", "argv": ["python3", "-m", "pytest"], "reason": "r"},
        diagnostic={"exit_code": 1, "timed_out": False},
    )
    rows = _piped_then_wrapped(show_view(story))
    exits = [r.strip() for r in rows if r.strip().startswith("exit:")]
    assert exits == ["exit:     1"], "\n".join(rows)
