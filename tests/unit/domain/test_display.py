"""Agent-written text is shown with every control, escape and bidi character visibly escaped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.display import escape_char, is_unsafe, visible, visible_data


def test_ordinary_text_is_shown_as_it_is() -> None:
    text = "Add multiply() to calc.py — naïve 数学, tabs\tare fine in blocks"
    assert (
        visible("Add multiply() to calc.py — naïve 数学")
        == "Add multiply() to calc.py — naïve 数学"
    )
    assert visible(text, multiline=True) == text


def test_escape_sequences_are_shown_inert_not_deleted() -> None:
    assert visible("\x1b[2K\x1b[1Afix the typo") == "\\x1b[2K\\x1b[1Afix the typo"
    assert visible("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"
    assert visible("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\") == (
        "\\x1b]8;;http://evil\\x1b\\link\\x1b]8;;\\x1b\\"
    )
    assert visible("\x9b2J\x90q\x9c") == "\\x9b2J\\x90q\\x9c", "C1 CSI, DCS and ST"


def test_overwriting_characters_are_escaped() -> None:
    assert visible(".ssh/authorized_keys\rREADME.md") == ".ssh/authorized_keys\\rREADME.md"
    assert visible("keys\b\b\b\bmd") == "keys\\x08\\x08\\x08\\x08md"
    assert visible("a\x7fb\x00c") == "a\\x7fb\\x00c"


@pytest.mark.parametrize(
    "char",
    [
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u202e",
        "\u2066",
        "\u2067",
        "\u2068",
        "\u2069",
        "\u200e",
        "\u200f",
        "\u061c",
    ],
)
def test_every_bidi_control_is_escaped(char: str) -> None:
    assert visible(f"a{char}b") == f"a\\u{ord(char):04x}b"


def test_invisible_format_characters_are_escaped() -> None:
    assert visible("a\u200bb\u200dc\ufeffd\u00ade") == "a\\u200bb\\u200dc\\ufeffd\\xade"
    assert visible("tag\U000e0041") == "tag\\U000e0041"
    assert visible("line\u2028sep") == "line\\u2028sep"
    assert visible("\u3164") == "\\u3164", "a Hangul filler is a blank letter"


def test_invisible_combining_marks_are_escaped_so_two_paths_cannot_look_the_same() -> None:
    """Attack: ``calc.py`` + a variation selector (or a grapheme joiner, a Khmer inherent
    vowel) is another file that looks exactly like ``calc.py``: these marks draw nothing."""
    assert visible("calc.py\ufe0f") == "calc.py\\ufe0f"
    assert visible("ca\u034flc.py") == "ca\\u034flc.py"
    assert visible("a\u17b4\u17b5b") == "a\\u17b4\\u17b5b"
    assert visible("x\u180by\U000e0100") == "x\\u180by\\U000e0100"


def test_a_tower_of_combining_marks_cannot_draw_over_neighbouring_lines() -> None:
    """A browser draws hundreds of stacked marks over the lines around them (Zalgo)."""
    shown = visible("calc.py" + "\u0336\u0489" * 150)
    assert shown.startswith("calc.py\u0336\u0489\u0336\u0489\\u0336")
    assert shown.count("\\u0489") == 148


def test_the_marks_real_text_stacks_are_shown_as_they_are() -> None:
    vietnamese = "Vi\u1ec7t Nam"  # precomposed, and decomposed below: two marks on one letter
    assert visible(vietnamese) == vietnamese
    decomposed = "Vie\u0323\u0302t"
    assert visible(decomposed) == decomposed


def test_newlines_and_tabs_are_kept_only_in_multiline_text() -> None:
    assert visible("one\ntwo\tthree") == "one\\ntwo\\tthree"
    assert visible("one\ntwo\tthree", multiline=True) == "one\ntwo\tthree"
    assert visible("one\r\ntwo", multiline=True) == "one\\r\ntwo"


def test_non_strings_are_shown_as_text() -> None:
    assert visible(42) == "42"
    assert visible(None) == "None"


def test_nested_data_is_escaped_keys_and_values() -> None:
    data = {"path\u202e": ["\x1b[2J", 3, {"why": "\r"}]}
    assert visible_data(data) == {"path\\u202e": ["\\x1b[2J", 3, {"why": "\\r"}]}


def test_escapes_spell_the_code_point() -> None:
    assert [escape_char(c) for c in "\x1b\u202e\U000e0001\n"] == [
        "\\x1b",
        "\\u202e",
        "\\U000e0001",
        "\\n",
    ]


@given(st.text())
def test_nothing_unsafe_ever_survives(text: str) -> None:
    assert not any(is_unsafe(c) for c in visible(text))


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")))
)
def test_safe_text_is_never_changed(text: str) -> None:
    if not any(is_unsafe(c) for c in text):
        assert visible(text) == text
