"""A name mixing Latin with a script whose letters look Latin is drawn escaped.

``c<CYRILLIC A>lc.py`` beside ``calc.py`` read as the same name twice on the approval
card (red-team helper-109): the JSON quotes said "not plain", not which letter was foreign.
"""

from __future__ import annotations

import pytest

from shared.domain.display import lookalike_name, shown_name_text


@pytest.mark.parametrize(
    "name",
    [
        "c\u0430lc.py",  # CYRILLIC SMALL LETTER A
        "\u0430/calc.py",  # a folder of one Cyrillic letter
        "t\u0435sts/test_calc.py",  # CYRILLIC SMALL LETTER IE
        "rep\u03bfrt.md",  # GREEK SMALL LETTER OMICRON
        "\u0441\u03bf",  # Cyrillic and Greek together
        "caf\u00e9/\u0430.py",  # Latin with an accent counts as Latin
    ],
)
def test_a_name_mixing_latin_lookalike_scripts_is_drawn_escaped(name: str) -> None:
    assert lookalike_name(name)
    assert shown_name_text(name).isascii()
    assert "\\u0" in shown_name_text(name)


@pytest.mark.parametrize(
    "name",
    [
        "calc.py",
        "docs/caf\u00e9.md",
        "\u043f\u0440\u0438\u0432\u0435\u0442",
        "docs/\u65e5\u672c\u8a9e.md",
        "\u03b1\u03b2",
    ],
)
def test_a_name_of_one_script_or_of_latin_and_an_unlike_script_is_drawn_as_it_is(
    name: str,
) -> None:
    assert not lookalike_name(name)
    assert shown_name_text(name) == f'"{name}"'
