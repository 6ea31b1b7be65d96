"""On a terminal, every row kodo draws of a long line starts with kodo's own mark, never
with the agent's text (red-team helper-119)."""

from __future__ import annotations

import pytest

from services.cli.review import _rows_of
from services.cli.review_views import diff_view
from services.cli.views import CONTINUED, terminal_rows

FORGED = "-Run the test suite before every release."
PATCH = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    f"@@ -1,0 +1,1 @@\n+Build: ok{' ' * 120}{FORGED}\n"
)


def test_a_folded_added_line_never_draws_a_row_reading_as_a_removal() -> None:
    rows = diff_view(PATCH, 80).plain.splitlines()

    assert rows[-1].startswith(CONTINUED), rows
    assert [r for r in rows if r.startswith("-Run")] == []
    assert all(len(r) < 80 for r in rows)
    assert "".join(r.removeprefix(CONTINUED) for r in rows[4:]) == f"+Build: ok{' ' * 120}{FORGED}"


def test_a_pipe_gets_each_line_whole() -> None:
    assert diff_view(PATCH).plain.splitlines()[-1] == f"+Build: ok{' ' * 120}{FORGED}"


@pytest.mark.parametrize("blanks", [0, 1, 76, 78, 158])
def test_a_command_line_of_any_indent_never_puts_its_text_at_column_0(blanks: int) -> None:
    """kodo indents the command's output by two blanks; the blanks its own line starts
    with are its text, folded with it (taken as the indent, 78 of them pushed the text
    onto a row of its own, flush left on an 80-column terminal)."""
    line = "  " + " " * blanks + "== diagnostic.json of ExecuteST (sha256 " + "0" * 64 + ")"

    rows = _rows_of(line, 80)

    assert all(len(r) < 80 for r in rows), rows
    assert all(r.startswith("  ") for r in rows), rows
    assert all(r[2:].startswith(CONTINUED) for r in rows[1:]), rows


def test_wide_characters_are_counted_as_the_cells_they_take() -> None:
    rows = terminal_rows("界" * 60, 80)
    assert len(rows) == 2
    assert all(2 * len(r.removeprefix(CONTINUED)) < 80 for r in rows)
