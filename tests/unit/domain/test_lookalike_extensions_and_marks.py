"""Names still drawn like a Latin name (red-team helper-117 on helper-115's
``_foreign_in_a_latin_stem``).

Two gaps in ``lookalike_name``:

* ``_foreign_in_a_latin_stem`` judges only a component's *stem* (before its last dot):
  a letter or digit of an unlisted script in the *extension* (``config.js<MYANMAR
  WA>n``) is never looked at, and ``_mixed_script`` counts only the listed scripts;
* every rule looks at letters and decimal digits only (``c.isalpha()``, category Nd), so
  a punctuation mark or symbol that Unicode's confusables.txt maps to a Latin letter
  (HEBREW PUNCTUATION PASEQ, DIVIDES, DEVANAGARI DANDA: each drawn as ``l``) is never
  counted.

Each name below is NFKC-stable, and ``shown_name_text`` draws it as itself beside the
real name it reads as.
"""

from __future__ import annotations

import unicodedata

import pytest

from shared.domain.display import lookalike_name, shown_name_text

CASES = [
    ("config.js\u101dn", "config.json"),  # MYANMAR LETTER WA (o) in the extension
    ("pyproject.t\u0c66ml", "pyproject.toml"),  # TELUGU DIGIT ZERO (o) in the extension
    ("yarn.l\u0d20ck", "yarn.lock"),  # MALAYALAM LETTER TTHA (o) in the extension
    ("ca\u05c0c.py", "calc.py"),  # HEBREW PUNCTUATION PASEQ (l), category Po
    ("ca\u2223c.py", "calc.py"),  # DIVIDES (l), category Sm
    ("ca\u0964c.py", "calc.py"),  # DEVANAGARI DANDA (l), category Po
]


@pytest.mark.parametrize(
    ("forged", "real"), CASES, ids=[r + str(i) for i, (_, r) in enumerate(CASES)]
)
def test_a_name_drawn_like_a_latin_name_is_shown_escaped(forged: str, real: str) -> None:
    assert unicodedata.normalize("NFKC", forged) == forged  # (the NFKC rule cannot see it)
    assert not lookalike_name(real)
    assert lookalike_name(forged), (
        f"{shown_name_text(forged)} ({[unicodedata.name(c) for c in forged if not c.isascii()]})"
        f" is drawn as itself beside {real!r}, which it reads as"
    )
