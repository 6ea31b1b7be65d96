"""A path whose "folder separator" is a slash lookalike is never drawn like the real path
(red-team helper-108; failed while such names were drawn as they are).

helper-106 made ``lookalike_name`` escape names holding a non-U+0020 space or not in
NFC, so two revisions naming ``docs/old notes.md`` and ``docs/old<NBSP>notes.md`` are
told apart on the run page's diff, ``kodo run plans`` and the CLI's file rows. A
DIVISION SLASH (U+2215), FRACTION SLASH (U+2044) or FULLWIDTH SOLIDUS (U+FF0F) passes
``unconfined`` and NFC, so ``src<U+2215>calc.py`` (a top-level file the hostile
repository tracks) is drawn ``"src<U+2215>calc.py"``: the approver reads a change to
``src/calc.py``, a file in the ``src`` folder, and the plan changes another file. Not a
letter homoglyph (the known limit): it fakes the path's structure, the folder a change
lands in.
"""

from __future__ import annotations

import pytest

from services.cli.views import shown_path
from shared.domain.display import lookalike_name
from shared.domain.plan_diff import plan_lines
from shared.domain.policy import unconfined

SLASHES = {"division-slash": "\u2215", "fraction-slash": "\u2044", "fullwidth-solidus": "\uff0f"}


@pytest.mark.parametrize("slash", list(SLASHES.values()), ids=list(SLASHES))
def test_a_slash_lookalike_in_a_name_is_drawn_escaped(slash: str) -> None:
    name = f"src{slash}calc.py"
    assert unconfined(name) is None  # the plan may name it
    plan = {"design": "d", "files": [{"path": name, "change": "delete", "why": "w"}]}
    drawn = {
        "lookalike_name": str(lookalike_name(name)),
        "plan_diff": plan_lines(plan)[1],
        "cli shown_path": shown_path(name),
    }
    assert lookalike_name(name), drawn
    assert all(slash not in text for text in drawn.values()), drawn
