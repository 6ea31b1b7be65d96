"""The run page's diff: a git patch read as files, hunks and highlighted lines, never
guessed at, and never a different text from the one stored."""

from __future__ import annotations

import time

from services.api.diff_view import (
    MAX_LINES_PER_FILE,
    MAX_LINES_PER_PATCH,
    UNPARSED_RULE,
    ParsedPatch,
    parse_patch,
)
from services.api.highlighting import Job, highlighted
from services.api.run_review import round_of

PATCH = """diff --git a/calc.py b/calc.py
index 3b18e51..c2d1f0a 100644
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,3 @@
 def add(a, b):
-    return a+b
+    return a + b
 # end
diff --git a/old.txt b/new.txt
similarity index 90%
rename from old.txt
rename to new.txt
diff --git a/logo.png b/logo.png
new file mode 100644
Binary files /dev/null and b/logo.png differ
diff --git a/notes.md b/notes.md
deleted file mode 100644
--- a/notes.md
+++ /dev/null
@@ -1 +0,0 @@
--- a removed line that starts like a file header
\\ No newline at end of file
"""


def test_a_patch_reads_as_files_with_their_change_counts_and_line_numbers() -> None:
    parsed = parse_patch(PATCH)

    assert parsed.unparsed is None
    assert [(f.path, f.change, f.added, f.removed) for f in parsed.files] == [
        ("calc.py", "modified", 1, 1),
        ("new.txt", "renamed", 0, 0),
        ("logo.png", "binary", 0, 0),
        ("notes.md", "deleted", 0, 1),
    ]
    assert (parsed.added, parsed.removed) == (1, 2)
    [hunk] = parsed.files[0].hunks
    assert [(ln.kind, ln.old_no, ln.new_no) for ln in hunk.lines] == [
        ("ctx", 1, 1),
        ("del", 2, None),
        ("add", None, 2),
        ("ctx", 3, 3),
    ]
    assert parsed.files[1].old_path == "old.txt"
    deleted = parsed.files[3].hunks[0].lines
    assert [ln.kind for ln in deleted] == ["del", "note"]
    assert deleted[0].text == "-- a removed line that starts like a file header"


def test_side_by_side_pairs_each_run_of_removals_with_the_additions_after_it() -> None:
    patch = (
        "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,5 +1,5 @@\n"
        " same\n-old one\n-old two\n+new one\n ctx\n-gone\n+added\n+more\n"
        "\\ No newline at end of file\n"
    )

    [hunk] = parse_patch(patch).files[0].hunks
    rows = [
        (left.text if left else None, right.text if right else None)
        for left, right in hunk.side_by_side()
    ]

    assert rows == [
        ("same", "same"),
        ("old one", "new one"),
        ("old two", None),
        ("ctx", "ctx"),
        ("gone", "added"),
        (None, "more"),
        (None, "\\ No newline at end of file"),
    ]


def test_highlighting_tags_tokens_without_changing_a_character() -> None:
    parsed = parse_patch(PATCH)

    for line in parsed.files[0].hunks[0].lines:
        assert "".join(p.text for p in line.pieces) == line.text
    first = parsed.files[0].hunks[0].lines[0].pieces
    assert ("tok-k", "def") in [(p.css, p.text) for p in first]
    assert ("tok-nf", "add") in [(p.css, p.text) for p in first]


def test_control_characters_reach_the_pieces_as_visible_escapes() -> None:
    patch = (
        'diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -0,0 +1 @@\n+x = "\x1b[2J\u202e"\r\n'
    )

    [line] = parse_patch(patch).files[0].hunks[0].lines

    assert "".join(p.text for p in line.pieces) == 'x = "\\x1b[2J\\u202e"\\r'


def test_text_that_is_not_a_git_diff_is_refused_with_the_rule_not_guessed_at() -> None:
    assert parse_patch("<b>hello</b>\n").unparsed == (
        f"{UNPARSED_RULE}: text before the first `diff --git` header: '<b>hello</b>'; shown as text"
    )
    short_hunk = "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n x\n"
    assert parse_patch(short_hunk).unparsed == (
        f"{UNPARSED_RULE}: a hunk of 'a' ends before its counted lines; shown as text"
    )
    stray = "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n+x\n+y\n"
    assert parse_patch(stray).unparsed is not None
    assert parse_patch(stray).files == []


def test_a_huge_file_is_cut_to_the_lines_shown_and_says_how_many_are_not() -> None:
    lines = MAX_LINES_PER_FILE + 25
    body = "".join(f"+line {n}\n" for n in range(lines))
    header = "diff --git a/big.txt b/big.txt\n--- /dev/null\n+++ b/big.txt\n"
    patch = f"{header}@@ -0,0 +1,{lines} @@\n{body}"

    [big] = parse_patch(patch).files

    assert big.added == lines
    assert big.shown_lines == MAX_LINES_PER_FILE
    assert big.truncated == 25


def test_a_huge_patch_is_cut_to_the_lines_shown_but_every_file_keeps_its_counts() -> None:
    per_file = MAX_LINES_PER_FILE
    files = MAX_LINES_PER_PATCH // per_file + 2
    body = "".join(f"+line {n}\n" for n in range(per_file))
    patch = "".join(
        f"diff --git a/f{i}.txt b/f{i}.txt\n--- /dev/null\n+++ b/f{i}.txt\n"
        f"@@ -0,0 +1,{per_file} @@\n{body}"
        for i in range(files)
    )

    parsed = parse_patch(patch)

    assert [f.added for f in parsed.files] == [per_file] * files
    assert sum(f.shown_lines for f in parsed.files) == MAX_LINES_PER_PATCH
    assert parsed.files[-1].shown_lines == 0
    assert parsed.files[-1].truncated == per_file


def test_an_artifacts_round_is_read_from_its_name() -> None:
    assert round_of("patch.diff", "patch.diff") == 1
    assert round_of("patch.r3.diff", "patch.diff") == 3
    assert round_of("command-output.r2.txt", "command-output.txt") == 2
    assert round_of("patch.rx.diff", "patch.diff") is None
    assert round_of("other.diff", "patch.diff") is None


def test_a_name_holding_b_slash_is_read_from_the_rename_lines_not_split_in_the_header() -> None:
    """`diff --git a/test_calc.py b/notes b/test_calc.py` splits two ways; the page said the
    tests kept their name while git moved them to `notes b/test_calc.py`."""
    pure_rename = (
        "diff --git a/test_calc.py b/notes b/test_calc.py\nsimilarity index 100%\n"
        "rename from test_calc.py\nrename to notes b/test_calc.py\n"
        "diff --git a/x.py b/copy b/x.py\nsimilarity index 100%\n"
        "copy from x.py\ncopy to copy b/x.py\n"
        "diff --git a/run b/me.sh b/run b/me.sh\nold mode 100644\nnew mode 100755\n"
    )

    files = parse_patch(pure_rename).files

    assert [(f.old_path, f.path, f.change) for f in files] == [
        ("test_calc.py", "notes b/test_calc.py", "renamed"),
        ("x.py", "copy b/x.py", "copied"),
        ("run b/me.sh", "run b/me.sh", "modified"),
    ]


def _added(path: str, lines: list[str]) -> str:
    body = "".join(f"+{line}\n" for line in lines)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
        f"@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def _every_line_is_its_text(parsed: ParsedPatch) -> None:
    for diff in parsed.files:
        for hunk in diff.hunks:
            for line in hunk.lines:
                assert "".join(p.text for p in line.pieces) == line.text


def test_a_lexer_slow_on_the_agents_text_stops_in_time_and_keeps_what_it_lexed() -> None:
    """AutoIt lexes 20 kB of space-filled lines for 78 s, token by token; the child stops
    between tokens at its budget: the file lexed before keeps its colours, the slow one
    is shown plain, every character as it is (the bound is the API worker's life: 30 s
    held gunicorn's event loop past its timeout, and the worker was killed)."""
    patch = _added("b.py", ["def f():", "    return 1"]) + _added("notes.au3", [" " * 50] * 400)
    # The lexing child started (and pygments imported) first: on a loaded machine that
    # alone outlasted the budget once, and b.py was shown plain; this is about the lexer.
    assert highlighted([("w.py", [["x = 1"], []])], timeout_s=30)[0][0] is not None
    started = time.monotonic()
    parsed = parse_patch(patch)
    assert time.monotonic() - started < 20
    _every_line_is_its_text(parsed)
    first = parsed.files[0].hunks[0].lines[0].pieces
    assert ("tok-k", "def") in [(p.css, p.text) for p in first]
    assert all(p.css == "" for h in parsed.files[1].hunks for ln in h.lines for p in ln.pieces)


def test_a_single_token_the_lexer_cannot_finish_is_cut_off_by_killing_the_child() -> None:
    """One line of spaces is one token of a Makefile, lexed in quadratic time (80 kB:
    2.75 s; this one, about 40 s): no check between tokens stops it, the kill does."""
    jobs: list[Job] = [("b.py", [["def f(): pass"], []]), ("Makefile", [[" " * 300_000], []])]
    started = time.monotonic()
    answer = highlighted(jobs, timeout_s=1.0)
    assert time.monotonic() - started < 20
    assert answer == [[None, None], [None, None]]  # all plain: the child was killed
    assert highlighted(jobs[:1], timeout_s=10)[0][0] is not None  # alone, it is lexed


def test_a_git_binary_patch_is_shown_as_binary_never_as_an_empty_file() -> None:
    """patch.diff is made with ``--binary``: a file git calls binary (one NUL byte is
    enough, and a shell still runs such a script) comes as base85 literals, which the
    page took for an added file with no lines."""
    patch = (
        "diff --git a/check.sh b/check.sh\nnew file mode 100755\nindex 0000000..1234567\n"
        "GIT binary patch\nliteral 40\ncmZ?wbaPWsP*6}%P*6}(P*6}%PzVZ2PfjgL%qdALP%tvLFf=e=\n\n"
        "literal 0\nHcmV?d00001\n\n"
        "diff --git a/b.txt b/b.txt\n--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-x\n+y\n"
    )

    parsed = parse_patch(patch)

    assert parsed.unparsed is None
    assert [(f.path, f.change, f.hunks) for f in parsed.files[:1]] == [("check.sh", "binary", [])]
    assert parsed.files[1].change == "modified"
    assert parsed.files[1].added == 1
