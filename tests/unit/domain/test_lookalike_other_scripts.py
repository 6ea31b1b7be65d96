"""Names drawn like a Latin name by letters and digits of scripts the lookalike rules do
not list (red-team helper-115 on helper-114's ``_drawn_as_latin``).

``_mixed_script`` counts only the scripts in ``_LATIN_LOOKALIKES`` (Latin, Cyrillic,
Greek, Armenian, Cherokee, Coptic, Lisu) and ``_drawn_as_latin`` only a fixed list of
Cyrillic and Greek letters plus some Latin ranges; both look at letters only
(``c.isalpha()``), so a *digit* of another script never counts. Unicode's own
confusables (confusables.txt) map each character below to the Latin letter or the full
stop it replaces; each is NFKC-stable, so the NFKC rule misses it too, and
``lookalike_name`` is False: the plan card and the diff page draw ``c<MYANMAR WA>nfig.py``
as ``config.py``, beside a real ``config.py`` the repository tracks.
"""

from __future__ import annotations

import unicodedata

import pytest

from shared.domain.display import lookalike_name, shown_name_text

CASES = [
    ("c\u101dnfig.py", "config.py"),  # MYANMAR LETTER WA, drawn as o
    ("c\u0966nfig.py", "config.py"),  # DEVANAGARI DIGIT ZERO, drawn as o (a digit)
    ("c\u0c66nfig.py", "config.py"),  # TELUGU DIGIT ZERO, drawn as o (a digit)
    ("test_\u0ed0ld.py", "test_old.py"),  # LAO DIGIT ZERO, drawn as o (a digit)
    ("\u0d20bj.py", "obj.py"),  # MALAYALAM LETTER TTHA, drawn as o
    ("\u2d4fib/calc.py", "lib/calc.py"),  # TIFINAGH LETTER YAN, drawn as l
    ("\u15c5PI.md", "API.md"),  # CANADIAN SYLLABICS CARRIER GHO, drawn as A
    ("\u10e7arn.lock", "yarn.lock"),  # GEORGIAN LETTER QAR, drawn as y
    ("calc\u0660py", "calc.py"),  # ARABIC-INDIC DIGIT ZERO, drawn as a full stop
]


@pytest.mark.parametrize(("forged", "real"), CASES, ids=[f for f, _ in CASES])
def test_a_name_drawn_like_a_latin_name_by_another_script_is_shown_escaped(
    forged: str, real: str
) -> None:
    assert unicodedata.normalize("NFKC", forged) == forged  # (the NFKC rule cannot see it)
    assert not lookalike_name(real)
    assert lookalike_name(forged), (
        f"{shown_name_text(forged)} ({[unicodedata.name(c) for c in forged if not c.isascii()]})"
        f" is drawn as itself beside {real!r}, which it reads as"
    )
