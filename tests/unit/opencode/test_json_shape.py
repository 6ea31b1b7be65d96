"""An answer's shape is bounded before it is parsed: depth and number of containers."""

from __future__ import annotations

import json

from shared.opencode.calls import EXCERPT_CHARS, bounded_record
from shared.opencode.json_shape import MAX_CONTAINERS, MAX_DEPTH, shape_problem
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
