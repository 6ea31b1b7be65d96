"""What worker processes remember of object ids: bounded, least recently used first out."""

from __future__ import annotations

from services.worker.memo import BoundedMemo


def test_a_remembered_none_is_told_apart_from_nothing_remembered() -> None:
    memo: BoundedMemo[str, None] = BoundedMemo(2)
    assert memo.get("a") is None
    memo.put("a", None)
    assert memo.get("a") == (None,)


def test_the_least_recently_used_goes_first() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == (1,)  # a is now the most recent
    memo.put("c", 3)

    assert memo.get("b") is None
    assert memo.get("a") == (1,)
    assert memo.get("c") == (3,)
    assert len(memo) == 2
