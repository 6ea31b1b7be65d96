"""Piped output is plain: whole lines however long, no colour or cursor codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.cells import cell_len
from rich.text import Text

from services.cli.review_views import FileStat, diff_view, diffstat, timeline_table
from services.cli.run_list import age, runs_table, truncated
from services.cli.terminal import console, show
from services.cli.views import plan_card_lines, run_view


def test_a_piped_console_prints_a_long_line_whole_and_without_colour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long = "x" * 300

    console().print(Text(long, style="red bold"))

    assert capsys.readouterr().out == long + "\n"


def test_a_piped_run_status_keeps_a_long_step_error_on_its_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = "verification exited 1: " + "pytest -q tests/test_calc.py " * 10
    run = {
        "runId": "r1",
        "status": "failed",
        "steps": [{"stepId": "CompileST", "status": "failed", "error": error}],
    }

    console().print(run_view(run))

    rows = capsys.readouterr().out.splitlines()
    compile_row = next(r for r in rows if "CompileST" in r)
    assert compile_row.rstrip().endswith(error.rstrip())


def test_age_says_how_long_ago_in_its_largest_whole_unit() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    assert age((now - timedelta(seconds=45)).isoformat(), now) == "45s"
    assert age((now - timedelta(minutes=12, seconds=5)).isoformat(), now) == "12m"
    assert age((now - timedelta(hours=3, minutes=59)).isoformat(), now) == "3h"
    assert age((now - timedelta(days=2, hours=1)).isoformat(), now) == "2d"
    assert age(None, now) == "-"
    assert age("yesterday", now) == "-"


def test_a_long_goal_is_cut_with_an_ellipsis_after_it_is_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    goal = "\x1b[2J" + "y" * 100
    run = {"runId": "r1", "status": "queued", "goal": goal, "createdAt": None}

    console().print(runs_table([run], datetime.now(UTC)))

    row = capsys.readouterr().out.splitlines()[1]
    assert row.rstrip().endswith("\\x1b[2J" + "y" * 52 + "…")
    assert truncated("short") == "short"


def test_the_timeline_leaves_the_approval_without_calls_and_a_duration_in_its_column(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = {
        "status": "applying",
        "steps": [{"stepId": "CompileST", "status": "succeeded", "round": 1, "durationMs": 412}],
    }
    calls = [{"stepId": "CompileST", "status": "succeeded", "spentTokens": 9, "spentUsd": 0.0}]

    console().print(timeline_table(run, calls))

    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["CompileST"] == [
        "CompileST",
        "succeeded",
        "1",
        "-",
        "412",
        "ms",
        "1",
        "9",
        "$0.0000",
        "-",
    ], "the duration once, in its column; no detail left"
    assert rows["approval"] == ["approval", "succeeded", "-", "-", "-", "-", "-", "-", "approved"]
    assert rows["ApplyPatchST"][:2] == ["ApplyPatchST", "running"]


def test_a_piped_table_has_no_trailing_blanks(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        {"runId": "r1", "status": "queued", "goal": "a long goal " * 3, "submittedBy": "sam"},
        {"runId": "r2", "status": "failed", "goal": "short", "submittedBy": "a-longer-name"},
    ]

    show(runs_table(runs, datetime.now(UTC)))

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line == line.rstrip() for line in lines)
    assert lines[2].endswith(" short")


def test_the_diffstat_names_a_renamed_file_by_its_whole_new_name() -> None:
    """A name may hold ` b/`: the header `a/t.py b/notes b/t.py` is ambiguous, and the
    stat said the file kept its name while git moved it to `notes b/t.py`."""
    patch = (
        "diff --git a/t.py b/notes b/t.py\nsimilarity index 100%\n"
        "rename from t.py\nrename to notes b/t.py\n"
        "diff --git a/a b/c.py b/a b/c.py\n--- a/a b/c.py\n+++ b/a b/c.py\n"
        "@@ -1 +1 @@\n-x\n+y\n"
    )

    assert diffstat(patch) == [FileStat("notes b/t.py", 0, 0), FileStat("a b/c.py", 1, 1)]


HEADERLIKE = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -1,2 +1,2 @@\n x = 1\n--- a/calc.py\n+++ b/other.py\n"
    "@@ -9 +9 @@\n-y\n+z\n"
)
"""An agent's patch whose removed line is ``-- a/calc.py`` and added ``++ b/other.py``:
inside the hunk they read as a file's header lines, then a second hunk."""


def test_the_diffstat_counts_added_and_removed_lines_that_read_like_headers() -> None:
    """Counted by prefix, the stat said +1 -1 for a change of +2 -2 (helper-95)."""
    assert diffstat(HEADERLIKE) == [FileStat("calc.py", 2, 2)]


def test_the_diff_view_colours_a_headerlike_added_line_as_an_added_line() -> None:
    text = diff_view(HEADERLIKE)
    styled = [(text.plain[span.start : span.end], str(span.style)) for span in text.spans]

    assert styled == [
        ("diff --git a/calc.py b/calc.py", "bold"),
        ("--- a/calc.py", "bold"),
        ("+++ b/calc.py", "bold"),
        ("@@ -1,2 +1,2 @@", "cyan"),
        ("--- a/calc.py", "red"),
        ("+++ b/other.py", "green"),
        ("@@ -9 +9 @@", "cyan"),
        ("-y", "red"),
        ("+z", "green"),
    ]


def test_a_hunk_broken_by_its_lines_ends_there() -> None:
    """A hunk claiming more lines than follow: the next file header is still a header."""
    patch = (
        "diff --git a/a.py b/a.py\n@@ -1,5 +1,5 @@\n-a\n+b\n"
        "diff --git a/b.py b/b.py\n@@ -1 +1 @@\n-c\n+d\n"
    )

    assert diffstat(patch) == [FileStat("a.py", 1, 1), FileStat("b.py", 1, 1)]


def _card(path: str, why: str) -> dict[str, object]:
    plan = {
        "design": "Update the calculator.",
        "files": [{"path": path, "change": "modify", "why": why}],
        "risks": [],
        "tests": [],
    }
    return {"planSha256": "0" * 64, "plan": plan, "approval": None}


def test_two_plans_with_different_paths_never_draw_the_same_cli_plan_card() -> None:
    """Drawn ``file: CHANGE PATH  (WHY)``, a path holding ``  (docs)`` and a why holding
    ``docs)  (`` drew one card for two plans (red-team helper-97): the why has its own
    row, and a path that is not plain is quoted."""
    honest = plan_card_lines(_card("calc.py", "docs)  (fix add"))
    other = plan_card_lines(_card("calc.py  (docs)", "fix add"))
    assert honest != other
    assert '  file:   modify "calc.py  (docs)"' in other
    assert "  file:   modify calc.py" in honest


def test_every_row_of_the_plan_card_fits_its_width_and_starts_with_a_label_or_indent() -> None:
    """A terminal wraps nothing kodo printed, so no row it draws starts with agent text."""
    forged = " " * 70 + "  file:   modify README.md  (Fix a typo.)"
    card = _card("a" * 200 + " x", forged)
    card["plan"]["risks"] = [" " * 2000, forged]  # type: ignore[index]
    title, *rows = plan_card_lines(card, width=80)
    assert title.startswith("Plan card (sha256 ")  # kodo's own: the digest, whole
    for row in rows:
        assert len(row) <= 80, row
        assert row[:10].strip().endswith(":") or row.startswith("        | "), row
    files = [row for row in plan_card_lines(card) if row.startswith("  file:")]
    assert len(files) == 1


def test_wide_characters_are_folded_by_the_cells_they_take() -> None:
    """A risk of 70 CJK characters is 140 columns: folded by characters, the terminal
    wrapped it and the row it made began with the agent's text."""
    card = _card("calc.py", "fix")
    card["plan"]["risks"] = ["\u6f22" * 70 + " file: modify README.md"]  # type: ignore[index]
    _, *rows = plan_card_lines(card, width=80)
    assert all(cell_len(row) <= 80 for row in rows), [cell_len(r) for r in rows]
    assert [row for row in rows if row.startswith("  file:")] == ["  file:   modify calc.py"]
