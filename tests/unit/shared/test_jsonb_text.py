"""The JSON kodo stores for jsonb: U+0000 and lone surrogates become U+FFFD, everything
else reads back whole (astral characters, and the text of an escape, included)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from shared.db.jsonb_text import dumps
from shared.domain.storable import storable, storable_text

texts = st.text(alphabet=st.characters(codec=None, exclude_categories=()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def test_a_nul_or_a_lone_surrogate_reads_back_as_the_replacement_character() -> None:
    value = {"argv": ["python3", "-c", "x\x00"], "k\x00": "\x00\ud800", "lo": "a\udc00b"}
    assert json.loads(dumps(value)) == {
        "argv": ["python3", "-c", "x\ufffd"],
        "k\ufffd": "\ufffd\ufffd",
        "lo": "a\ufffdb",
    }


def test_the_text_of_an_escape_and_an_astral_character_are_kept() -> None:
    for text in ("\\u0000", "\\\\ud800", "\U0001f600", "\\\x00"):
        assert json.loads(dumps(text)) == storable_text(text)
    assert json.loads(dumps("\U0001f600 \\u0000")) == "\U0001f600 \\u0000"


def test_storable_text_changes_only_what_postgres_refuses() -> None:
    assert storable_text("a\x00b\ud83dc\U0001f600") == "a\ufffdb\ufffdc\U0001f600"
    assert storable({"k": [("x\x00",)]}) == {"k": [["x\ufffd"]]}


@given(json_values)
def test_any_value_reads_back_the_same_but_for_what_postgres_refuses(value: object) -> None:
    assert json.loads(dumps(value)) == storable(value)


def test_a_number_json_does_not_have_is_stored_as_null() -> None:
    """NaN and the infinities: Python's json writes them, jsonb refuses them."""
    value = {"a": [math.nan, math.inf, -math.inf, 1.5], "k\x00": "x"}
    assert json.loads(dumps(value)) == {"a": [None, None, None, 1.5], "k\ufffd": "x"}
