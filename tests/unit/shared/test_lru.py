"""What a process keeps: bounded, the least recently used first out."""

from __future__ import annotations

import pytest

from shared.lru import Lru


def test_the_least_recently_used_goes_first() -> None:
    kept: Lru[str, int] = Lru(2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # a is now the most recent
    kept.put("c", 3)

    assert kept.get("b") is None
    assert kept.get("a") == 1
    assert kept.get("c") == 3
    assert len(kept) == 2


def test_a_kept_value_is_replaced_and_everything_can_be_forgotten() -> None:
    kept: Lru[str, int] = Lru(2)
    kept.put("a", 1)
    kept.put("a", 2)
    assert (kept.get("a"), len(kept)) == (2, 1)
    kept.clear()
    assert (kept.get("a"), len(kept)) == (None, 0)


def test_it_holds_at_least_one() -> None:
    with pytest.raises(ValueError, match="positive"):
        Lru(0)
