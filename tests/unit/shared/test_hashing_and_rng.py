"""Digests and randomness are functions of their inputs only."""

from __future__ import annotations

from shared.hashing import canonical_bytes, canonical_json, op_key, sha256_hex
from shared.rng import seeded_rng


def test_canonical_json_ignores_key_order_and_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert canonical_json({"a": 1}) == '{"a":1}'


def test_the_signed_bytes_are_sorted_compact_json_with_non_ascii_as_raw_utf8() -> None:
    plan = {"tests": ["ok"], "design": 'naïve — "quoted"\n', "files": [{"why": "é", "path": "a"}]}
    expected = r'{"design":"naïve — \"quoted\"\n","files":[{"path":"a","why":"é"}],"tests":["ok"]}'
    assert canonical_bytes(plan) == expected.encode()
    assert canonical_bytes(plan) == canonical_json(plan).encode("utf-8")
    assert sha256_hex(canonical_bytes(plan)) == sha256_hex(canonical_json(plan))


def test_sha256_of_text_is_that_of_its_utf8_bytes() -> None:
    assert sha256_hex("é") == sha256_hex("é".encode())
    assert len(sha256_hex(b"")) == 64


def test_the_op_key_changes_with_every_input_and_only_with_them() -> None:
    base = ("run", "CompileST", 1, "prompt", {"type": "object"})
    key = op_key(*base)
    assert key == op_key("run", "CompileST", 1, "prompt", {"type": "object"})
    variants = [
        ("run2", *base[1:]),
        (base[0], "DecideST", *base[2:]),
        (*base[:2], 2, *base[3:]),
        (*base[:3], "other", base[4]),
        (*base[:4], {"type": "array"}),
    ]
    assert all(op_key(*v) != key for v in variants)  # type: ignore[arg-type]


def test_a_seeded_rng_repeats_for_the_same_seed_and_context() -> None:
    first = [seeded_rng(7, "ctx").random() for _ in range(2)]
    assert first[0] == first[1]
    assert seeded_rng(7, "ctx").random() != seeded_rng(8, "ctx").random()
    assert seeded_rng(7, "ctx").random() != seeded_rng(7, "other").random()
