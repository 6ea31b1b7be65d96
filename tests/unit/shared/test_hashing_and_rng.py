"""Digests and randomness are functions of their inputs only."""

from __future__ import annotations

import pytest

from shared.hashing import canonical_bytes, canonical_json, git_blob_digest, op_key, sha256_hex
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


def test_a_blob_id_is_git_s_for_both_object_formats() -> None:
    """``printf 'hello\\n' | git hash-object --stdin``, in a SHA-1 and a SHA-256 repository."""
    for length, expected in (
        (40, "ce013625030ba8dba906f756967f9e9ca394464a"),
        (64, "2cf8d83d9ee29543b34a87727421fdecb7e3f3a183d337639025de576db9ebb4"),
    ):
        digest = git_blob_digest(6, length)
        digest.update(b"hello\n")
        assert digest.hexdigest() == expected
    with pytest.raises(ValueError, match="no git object format"):
        git_blob_digest(6, 32)
