"""The run page's plan table and patch headers never draw two paths alike that differ only
in runs of ASCII spaces (red-team helper-108; failed while the page collapsed them).

helper-106 gave the page a ``shown_path`` filter that escapes a name holding a
non-U+0020 space or a decomposed letter. Any other path is drawn ``visible(path)``,
unquoted, into ``<td class="mono">`` / ``<h3 class="mono">``, and ``.mono`` sets no
``white-space`` (services/api/templates/ui_base.html): the browser collapses a run of
spaces into one and drops a trailing or leading one. ``docs/old  notes.md`` (two
spaces), ``calc.py `` (a trailing space) and `` calc.py`` are drawn as
``docs/old notes.md``, ``calc.py`` and ``calc.py``, all names ``unconfined``
allows and a hostile repository may track beside the real ones. The plan table is
what the approver approves (the CLI quotes such a path: ``"calc.py "``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.api.ui import _shown_path
from shared.domain.policy import unconfined

PAIRS = [
    ("docs/old notes.md", "docs/old  notes.md"),
    ("calc.py", "calc.py "),
    ("calc.py", " calc.py"),
]
IDS = ["double-space", "trailing-space", "leading-space"]
BASE_CSS = Path(__file__).parents[3] / "services/api/templates/ui_base.html"


def _in_browser(html_text: str) -> str:
    """What a browser draws of text in an element with the default ``white-space:
    normal``: each run of ASCII white space one space, none at the ends of the cell."""
    return re.sub(r"[ \t\n\r\f]+", " ", html_text).strip()


def test_mono_cells_collapse_white_space() -> None:
    css = BASE_CSS.read_text()
    rule = re.search(r"code, \.mono \{[^}]*\}", css)
    assert rule is not None
    assert "white-space" not in rule.group(0)


@pytest.mark.parametrize(("real", "twin"), PAIRS, ids=IDS)
def test_the_plan_tables_path_cells_tell_the_two_paths_apart(real: str, twin: str) -> None:
    assert unconfined(twin) is None  # a plan may name it
    drawn = (_in_browser(_shown_path(real)), _in_browser(_shown_path(twin)))
    assert drawn[0] != drawn[1], f"both drawn as {drawn[0]!r} on the run page"
