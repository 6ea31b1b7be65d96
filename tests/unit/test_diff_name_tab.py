"""The page names a file as git's patch names it, a name with a blank included
(red-team helper-114 on helper-109's quoted-name reader).

git ends a ``---``/``+++`` line with a TAB when the name holds a space (diff.c, for GNU
patch). ``git_name`` reads a quoted name only when the quote ends the line, so
``+++ "b/caf\\303\\251 x.py"<TAB>`` stays raw: the page's parser (whose ``+++`` line
overrides the header's name) draws git's octal quoting, the very thing helper-109 fixed;
unquoted, ``a b/x.py`` is drawn ``a b/x.py\\t``. The CLI's diffstat (header first) and
the plan card name the file rightly: the views disagree.
"""

from __future__ import annotations

from services.api.diff_view import parse_patch
from services.cli.review_views import diffstat

QUOTED = (
    'diff --git "a/caf\\303\\251 x.py" "b/caf\\303\\251 x.py"\n'
    "new file mode 100644\n"
    "index 0000000..b680253\n"
    "--- /dev/null\n"
    '+++ "b/caf\\303\\251 x.py"\t\n'
    "@@ -0,0 +1 @@\n"
    "+z\n"
)
PLAIN = (
    "diff --git a/a b/x.py b/a b/x.py\n"
    "index 1111111..2222222 100644\n"
    "--- a/a b/x.py\t\n"
    "+++ b/a b/x.py\t\n"
    "@@ -1 +1 @@\n"
    "-x\n"
    "+y\n"
)


def test_a_quoted_name_with_a_space_is_read_on_the_page() -> None:
    assert [s.path for s in diffstat(QUOTED)] == ["café x.py"]  # the CLI reads it
    files = parse_patch(QUOTED).files
    assert [(f.path, f.old_path) for f in files] == [("café x.py", "café x.py")]


def test_a_plain_name_with_a_space_is_read_without_git_s_tab() -> None:
    files = parse_patch(PLAIN).files
    assert [(f.path, f.old_path) for f in files] == [("a b/x.py", "a b/x.py")]
