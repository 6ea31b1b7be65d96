"""Escaping agent text for display holds memory a few times the text, not an object per
character (red-team helper-128).

``shared.domain.display.visible`` builds its result as a list of one-character strings
once the text holds anything to escape. CPython keeps a single copy of each Latin-1
character only: every other character read from a str is a fresh 76-byte object. A
patch line of 1.4 M CJK characters (4.2 MB of UTF-8, under ``max_patch_bytes``) after
one control character held 30x its bytes (~126 MB) in the API process drawing the run
page (``_shown_block`` on each line's pieces), per request and per view of the line,
and in ``kodo run show`` (``diff_view``).

What holds once fixed: the same escaping, with peak memory within a few times the text.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.memory_probe import PRELUDE

MAX_RATIO = 10.0

_PROBE = PRELUDE + textwrap.dedent(
    """
    from shared.domain.display import visible
    text = "\\x01" + "\\u4e2d" * 1_400_000
    before = hwm()
    shown = visible(text, multiline=True)
    after = hwm()
    assert shown.startswith("\\\\x01\\u4e2d") and len(shown) == len(text) + 3, shown[:10]
    print((after - before) / len(text.encode()))
    """
)


def test_visible_holds_a_few_times_the_text_at_most() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ratio = float(done.stdout.strip())
    assert ratio < MAX_RATIO, f"visible() on 4.2 MB of CJK text raised peak RSS by {ratio:.0f}x"
