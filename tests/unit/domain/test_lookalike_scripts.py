"""Names drawn like another name are escaped, whatever script draws them alike
(red-team helper-114 on helper-109's ``_mixed_script``).

``_mixed_script`` counts scripts by the first word of each letter's Unicode name and
knows six (Latin, Cyrillic, Greek, Armenian, Cherokee, Coptic). Letters drawn like
Latin ones that it misses, each NFKC-stable (so the NFKC rule misses them too):

* Latin's own look-alikes: LATIN LETTER SMALL CAPITAL S/C are drawn as ``s``/``c`` at
  x-height, LATIN LETTER DENTAL CLICK as ``l``, LATIN SMALL LETTER SCRIPT G as ``g``:
  all "LATIN", so the name is one script;
* Lisu (LISU LETTER MA drawn as M, ZHA as R), a script outside the list;
* a name wholly Cyrillic (``exec.py`` spelled in Cyrillic letters): one script, never
  mixed.
"""

from __future__ import annotations

import pytest

from shared.domain.display import lookalike_name, shown_name_text


@pytest.mark.parametrize(
    ("forged", "real"),
    [
        ("\ua731etup.py", "setup.py"),  # LATIN LETTER SMALL CAPITAL S
        ("\u1d04alc.py", "calc.py"),  # LATIN LETTER SMALL CAPITAL C
        ("\u01c0ib/calc.py", "lib/calc.py"),  # LATIN LETTER DENTAL CLICK
        ("\u0261itignore.txt", "gitignore.txt"),  # LATIN SMALL LETTER SCRIPT G
        ("\ua4dfakefile", "Makefile"),  # LISU LETTER MA
        ("\ua4e3EADME.md", "README.md"),  # LISU LETTER ZHA
        ("\u0435\u0445\u0435\u0441.\u0440\u0443", "exec.py"),  # all Cyrillic
    ],
    ids=[
        "small-cap-s",
        "small-cap-c",
        "dental-click",
        "script-g",
        "lisu-m",
        "lisu-r",
        "whole-cyrillic",
    ],
)
def test_a_name_drawn_like_a_latin_name_is_shown_escaped(forged: str, real: str) -> None:
    assert not lookalike_name(real)
    assert lookalike_name(forged), (
        f"{shown_name_text(forged)} is drawn as itself beside {real!r}, which it reads as"
    )
