"""An answer's shape is bounded before it is parsed: depth and number of containers."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.opencode import json_shape
from shared.opencode.calls import EXCERPT_CHARS, bounded_record
from shared.opencode.json_shape import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    parse_failure,
    shape_problem,
    strict_loads,
)
from shared.opencode.messages import AnswerNotJson
from shared.opencode.turn_inspection import unread_reason
from shared.redact import TOO_DEEP, redact


def test_a_plan_shaped_answer_passes() -> None:
    plan = {
        "design": "Use [brackets] and {braces} in prose: " + "[" * 500,
        "files": [{"path": f"f{i}.py", "change": "modify", "why": "x"} for i in range(200)],
        "risks": [],
        "tests": ['a \\"quoted [ one'],
    }
    assert shape_problem(json.dumps(plan).encode()) is None


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"diff": "+x = [[[[[[" * 10_000 + '\\"{{{{'}).encode()
    assert shape_problem(text) is None


def test_nesting_past_the_limit_is_refused() -> None:
    assert shape_problem(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is None
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert shape_problem(deep) == f"nests arrays and objects deeper than {MAX_DEPTH} levels"
    objects = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    assert shape_problem(objects) is not None


def test_too_many_shallow_containers_are_refused() -> None:
    flat = b"[" + b",".join([b"[]"] * (MAX_CONTAINERS + 1)) + b"]"
    assert "arrays and objects (at most" in (shape_problem(flat) or "")


def test_redact_cuts_what_is_nested_past_its_depth_instead_of_overflowing() -> None:
    value: object = "sk-" + "a" * 30
    for _ in range(2000):
        value = [value]
    shallow = redact([[["sk-" + "a" * 30]]])
    assert shallow == [[["[REDACTED]"]]]
    cut = redact(value)
    while isinstance(cut, list):
        cut = cut[0]
    assert cut == TOO_DEEP


def test_a_large_refused_answer_is_kept_as_an_excerpt_and_digest() -> None:
    record = {
        "structured": {"design": "x" * 1_000_000},
        "usage": {"total_tokens": 12},
        "tools": [{"tool": "read", "paths": ["a"]}],
    }
    kept = bounded_record(record)
    assert kept["bytes"] > 1_000_000
    assert len(kept["excerpt"]) == EXCERPT_CHARS
    assert len(kept["sha256"]) == 64
    assert kept["usage"] == {"total_tokens": 12}, "cost stays whole"
    assert kept["tools"] == [{"tool": "read", "paths": ["a"]}], "the tool trail stays whole"
    small = {"structured": {"design": "short"}}
    assert bounded_record(small) is small


def test_an_unterminated_string_of_escaped_quotes_is_counted_in_linear_time() -> None:
    """One string pattern with escapes rescanned to the end from every quote: 80 KB took
    13 s with the GIL held (a red-team pass). Escapes now go in a pass of their own."""
    for body in (b'"' + b'\\"' * 400_000, b'"' * 800_000, b'"\\' * 400_000):
        assert shape_problem(body) is None  # json.loads refuses them afterwards


def test_a_body_that_is_not_utf8_is_refused_before_counting() -> None:
    nested = "[" * 300 + "]" * 300
    assert shape_problem(nested.encode("utf-16-le")) == "is not UTF-8 JSON text (a NUL byte)"
    assert shape_problem(nested.encode("utf-32")) is not None
    assert shape_problem(b'{"a": "\xff"}') == "is not UTF-8 text"


def _holds_a_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_holds_a_surrogate(k) or _holds_a_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_a_surrogate(v) for v in value)
    return False


LONE = "escapes a lone UTF-16 surrogate (text that is not Unicode)"


@pytest.mark.parametrize(
    ("body", "lone"),
    [
        (rb'{"design": "a \ud800 b"}', True),
        (rb'{"design": "\udc00"}', True),
        (rb'{"d\uDBFF": 1}', True),
        (rb'["\ud83d\ude00", "\uD83D\uDE00"]', False),
        (rb'["\ud83d", "\ude00"]', True),
        (rb'["\ud83d\u0041\ude00"]', True),
        (rb'["\ude00\ud83d"]', True),
        (rb'["\\ud800", "\\\\ud800"]', False),
        (rb'["\\\ud800"]', True),
        ('["\U0001f600 raw"]'.encode(), False),
    ],
    ids=[
        "high-alone",
        "low-alone",
        "in-a-key",
        "a-pair-either-case",
        "halves-in-two-strings",
        "a-pair-split-by-a-letter",
        "low-before-high",
        "the-text-of-an-escape",
        "a-backslash-then-a-lone-one",
        "raw-utf8-astral",
    ],
)
def test_a_lone_surrogate_escape_is_refused_before_parsing(body: bytes, lone: bool) -> None:
    assert _holds_a_surrogate(json.loads(body)) is lone  # what parsing would have made
    assert (shape_problem(body) == LONE) is lone


ESCAPES = ["\\ud83d", "\\ude00", "\\udbff", "\\udc00", "\\\\", "\\u0041", "\\n", "x", "\\\\u"]


@given(st.lists(st.lists(st.sampled_from(ESCAPES), max_size=8).map("".join), max_size=4))
def test_the_refusal_agrees_with_what_parsing_would_make(strings: list[str]) -> None:
    body = ("[" + ",".join(f'"{s}"' for s in strings) + "]").encode()
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # "\\u" with no hex after it: not JSON at all
    assert (shape_problem(body) == LONE) is _holds_a_surrogate(parsed)


@pytest.mark.parametrize(
    "body",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": [-Infinity]}', '{"a": 1e400}', '{"a": -1e999}'],
    ids=["nan", "infinity", "minus-infinity", "past-a-double", "past-a-double-negative"],
)
def test_a_number_json_does_not_have_is_not_json(body: str) -> None:
    """Python's json reads these (and writes them back); JSON and Postgres's jsonb do not."""
    json.loads(body)  # what the plain reader would have taken
    with pytest.raises(ValueError, match=r"is not JSON|past a double's range"):
        strict_loads(body)


def test_the_strict_reader_reads_json_as_json_does() -> None:
    body = '{"a": [1, -2.5, 1e308, 0.1, true, null, "NaN"], "b": {"c": "Infinity"}}'
    assert strict_loads(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('{"risks": [NaN], "secret": "hunter2"}', "NaN is not JSON"),
        ('{"secret": "hunter2", "n": 1e400}', "the number 1e400 is past a double's range"),
        ('{"secret": "hunter2" ', "Expecting ',' delimiter at character 21"),
    ],
)
def test_a_refusal_of_a_body_that_is_not_json_says_why_and_quotes_none_of_it(
    body: str, said: str
) -> None:
    """The reason goes into the call's refusal (unread_reason): the parser's words only."""
    try:
        strict_loads(body)
    except ValueError as exc:
        reason = parse_failure(exc)
    else:
        raise AssertionError("parsed")
    assert reason == said
    refused = AnswerNotJson(f"GET x: body is not JSON ({reason}): {body}", reason=reason)
    assert unread_reason(refused) == f"the body is not JSON ({said})"
    assert "hunter2" not in unread_reason(refused)


def _brackets_by_parsing(value: object) -> str:
    """The brackets of a JSON value's text outside its strings, read from the value."""
    if isinstance(value, list):
        return "[" + "".join(_brackets_by_parsing(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + "".join(_brackets_by_parsing(v) for v in value.values()) + "}"
    return ""


_TRICKY = st.text(alphabet=st.sampled_from('ab"\\[]{}\n\u00e9'), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TRICKY, inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_JSON, window=st.sampled_from([1, 2, 3, 7, 1 << 16]))
def test_the_brackets_counted_are_those_outside_strings_whatever_the_window(
    value: object, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strings are dropped a window at a time: a string (escapes and all) across any
    window boundary is still one string."""
    monkeypatch.setattr(json_shape, "_WINDOW", window)
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert json_shape._skeleton(text.encode()).decode() == _brackets_by_parsing(value)
